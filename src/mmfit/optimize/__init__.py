"""Turning trained runs into better or smaller ones: hyperparameter search (many runs), pruning,
quantization, distillation and adapter merging (each writes a new run directory)."""
