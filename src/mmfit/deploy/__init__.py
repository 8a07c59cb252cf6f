"""Deployment: load a run directory and predict (more backends and serving come later)."""
