"""Data stage: landing the demo tables, ingesting sources in batches, contracts, snapshots."""
