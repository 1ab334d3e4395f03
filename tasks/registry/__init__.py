"""Registry stage: versions and aliases (the one truth about models), retrain history, BentoML."""
