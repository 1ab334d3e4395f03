"""Core: typed settings, the run context, the dataset config, the artifact store, error types."""
