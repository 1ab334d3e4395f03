"""Registry stage: versions and aliases (the one truth about models), the retrain slot, BentoML."""
