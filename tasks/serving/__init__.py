"""Serving stage: the library of the prediction service (request schema, routing, model watcher, spool)."""
