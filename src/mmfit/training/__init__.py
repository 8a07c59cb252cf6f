"""Training: the fit loop (set up -> fit -> finish), losses, distillation terms, training checkpoints,
and DDP / FSDP across processes. It trains a model; what a model is (fine-tuning strategies,
adapters, surgery) lives in models/, and every file it writes goes through the run store (mmfit.run.store)."""
