"""Training: losses, the fit loop, metrics, checkpoints, evaluation."""
