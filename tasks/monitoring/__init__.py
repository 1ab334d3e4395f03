"""Monitoring stage: whylogs profiles, the monitoring window, drift, live performance, lineage."""
