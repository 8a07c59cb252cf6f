"""Evaluation: run a model over a split (predictions in original units), every metric per task kind,
the modality ablation, and logit comparisons between two models (parity after export or compression).

It sits beside training and the run owner: training validates with it, and deploy, optimize and the
report evaluate loaded runs with it without importing training."""
