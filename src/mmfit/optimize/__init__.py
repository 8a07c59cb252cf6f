"""Compression of trained runs: pruning, quantization, distillation (each writes a new run)."""
