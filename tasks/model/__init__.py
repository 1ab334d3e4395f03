"""Model stage: the fitted feature transform, training and search, evaluation, W&B tracking."""
