"""Monitoring stage: the monitoring window, drift, live performance, lineage."""
