"""The small-data recipe (the zero-config default) behind `mmfit.fit` / `mmfit train MANIFEST --target COL`.

Members, each an ordinary run in RUN/members/<name>, all reading the data the same way (one data
section, so one Batch serves them all):
- `probe`: heads on frozen features (linear-probe style): packaged pretrained encoders for text
  and images, spectral statistics for audio, a small table encoder; their outputs are computed
  once (training/embeddings.py), so its epochs cost only fusion and heads.
- `neighbours`: the same frozen outputs of text, images and audio, read by k nearest training rows
  (models/heads.py NeighbourHead; k and the temperature chosen on validation): nothing trained, a
  few seconds, and it errs unlike the linear heads (AutoGluon's portfolio holds a kNN for this).
- `finetune` (LP-FT, Kumar et al. 2022): starts from the probe's weights and fine-tunes the text
  encoder with a small learning rate (images stay frozen: on a CPU that is where the time goes).
- `scratch`: small encoders trained from scratch for images (at a reduced size) and audio, where
  pretrained features can be far from the data (handwriting, spectrograms, scans); text frozen. Each
  image or log-mel becomes at most SCRATCH_TOKENS coarse tokens (scratch_patch), so that many epochs fit.
While the budget lasts, more members follow, of the kinds the selection weighs so far: fine-tuned
ones each fine-tuned another way (FINETUNE_PORTFOLIO: fresh heads, the top blocks only; then the
same ways with other seeds), from-scratch ones with other seeds (same split, other draws). Every
member's fused head and, for the first task, each modality's own head are candidates; each is
calibrated by a temperature on validation, and ensemble selection (recipe/selection.py) weighs them
by the validation log loss of the mixture, so a modality or a member that does not help gets no
weight. Then (recipe.refit, AutoGluon's refit_full) each chosen member is trained again on
train + val for the epoch count validation chose, with the same preprocessing, and stands in for
it under its weight and temperature: the deployed members see a fifth more rows. `time_limit` is shared
out: first the frozen image encoders' one pass is kept within a third of it (fit_frozen_passes:
smaller images, then fewer video frames), the probe first, then the others in what remains, each
stopping before an epoch that would overrun its share, its learning rate decaying over the epochs that
fit in it (training/loop.py plan_schedule); refits take what the extra members leave
(refitting measured no difference on emoji, BENCHMARKS.md, and costs the time of another member).

Where each part lives: members.py (what each member is, as a run config), budget.py (how the time
limit is shared out), selection.py (calibration and ensemble selection on validation), orchestrate.py
(`run_recipe`: training the members, choosing, refitting, writing the ensemble run).
"""
