"""Core: typed settings, the run context, the dataset config and feature definition, the artifact store,
error types, and the leaves every stage shares (the prediction log layout, whylogs profiles)."""
