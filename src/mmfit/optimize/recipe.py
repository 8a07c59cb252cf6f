"""The small-data recipe behind `mmfit.fit` / `mmfit train MANIFEST --target COL`.

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
calibrated by a temperature on validation, and ensemble selection (models/ensemble.py) weighs them
by the validation log loss of the mixture, so a modality or a member that does not help gets no
weight. Then (recipe.refit, AutoGluon's refit_full) each chosen member is trained again on
train + val for the epoch count validation chose, with the same preprocessing, and stands in for
it under its weight and temperature: the deployed members see a fifth more rows. `time_limit` is shared
out: first the frozen image encoders' one pass is kept within a third of it (fit_frozen_passes:
smaller images, then fewer video frames), the probe first, then the others in what remains, each
stopping before an epoch that would overrun its share, its learning rate decaying over the epochs that
fit in it (training/loop.py plan_schedule); refits take what the extra members leave
(refitting measured no difference on emoji, BENCHMARKS.md, and costs the time of another member).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from mmfit.config import Config, ConfigError, encoder_config, modality_kinds
from mmfit.data.cache import FeatureCache
from mmfit.data.modalities.audio import AudioProcessor
from mmfit.data.manifest import read_manifest
from mmfit.evaluation.metrics import default_metric, task_metrics
from mmfit.models.ensemble import candidate_outputs, ensemble_selection, fit_temperature, to_scores
from mmfit.registry import encoder_info
from mmfit.run import CANDIDATES, ENSEMBLE, MEMBERS, OOF, PARAMS, Run, resolve_paths
from mmfit.training.crossfit import oof_logits
from mmfit.training.embeddings import IMAGES_PER_CALL, cache_outputs, cached_modalities
from mmfit.training.loop import trained

RESERVE = 0.08  # of the time limit, kept for selecting, evaluating and writing the ensemble
PASS_SHARE = 1 / 3  # of the time limit: the most the frozen image encoders' one pass over every row may take
MIN_PASS = 60.0  # seconds: a shorter pass is not worth smaller images
SLOW_IMAGE = 0.5  # seconds an image at 224 px takes a pretrained encoder on the slowest machine we expect
# tokens of a from-scratch member's image or log-mel at most: on a few thousand rows a small transformer
# learns from ~50 coarse tokens what it learns from ~200 fine ones, in a fourth of the time an epoch, so
# 2-4x the epochs fit its share (AV-digits: 56 px images 196 -> 49 tokens, 2 s of audio 208 -> 52;
# the member's validation macro-F1 0.61 -> 0.85 on a seed where it had not taken off; BENCHMARKS.md)
SCRATCH_TOKENS = 64
ALL_BLOCKS = 1000  # finetune `partial` with at least as many layers as blocks: all of them, not the embeddings
CLOSED_FORM = ("convex", "trees", "neighbours")  # members fitted without epochs: no share of the time limit


def _fresh_heads(c: Config) -> None:
    """Plain fine-tuning: heads from scratch at a larger step, the encoder at a somewhat larger one."""
    c.train.lr = 1e-3
    for ec in _tuned_encoders(c):
        ec.lr = 5e-5


def _top_blocks(c: Config) -> None:
    """LP-FT of the top three blocks only, at a larger step: the lower layers keep their features."""
    for ec in _tuned_encoders(c):
        ec.finetune.layers, ec.lr = 3, 1e-4


# The fine-tuned members after the first: each another way to fine-tune (from the probe's heads or
# not, the whole stack or its top, the step), then the same ways again with other seeds. Members
# that differ only by their seed make similar errors; differently fine-tuned ones err differently,
# so their average is worth more (AutoGluon trains a portfolio of configurations for the same
# reason). -> (whether it starts from the probe's weights, change)
FINETUNE_PORTFOLIO = [(False, _fresh_heads), (True, _top_blocks)]


def _tuned_encoders(c: Config) -> list:
    """The pretrained encoders a member fine-tunes (pretrained as their registry entry declares)."""
    out = []
    for m in modality_kinds(c):
        ec = encoder_config(c, m)
        if ec.finetune.strategy != "frozen" and encoder_info(ec.name, f"model.encoders.{m}").pretrained:
            out.append(ec)
    return out


def extra_member(name: str, plan: Config, k: int, from_probe: bool) -> tuple[Config, bool]:
    """The k-th member (k >= 2) of the kind `name` (finetune, scratch) -> (its config, whether it
    starts from the probe's weights). Fine-tuned members go through FINETUNE_PORTFOLIO, then its
    ways again with other seeds; the others differ by their seed."""
    c = copy.deepcopy(plan)
    if name != "finetune":
        c.train.seed += k - 1  # the same split, other draws
        return c, from_probe
    ways = [(from_probe, lambda c: None)] + FINETUNE_PORTFOLIO
    start, change = ways[(k - 1) % len(ways)]
    change(c)
    c.train.seed += (k - 1) // len(ways)
    return c, start


def scratch_patch(height: int, width: int, most: int = SCRATCH_TOKENS) -> int:
    """The smallest patch side (4 to 32 px, a power of two) that cuts a height x width image or
    log-mel into at most `most` tokens (the stem's stride-2 steps round up)."""
    for p in (4, 8, 16):
        if math.ceil(height / p) * math.ceil(width / p) <= most:
            return p
    return 32


def member_configs(base: Config, groups_apart: bool = False) -> dict[str, Config]:
    """The members worth training for these modalities, in the order they are trained. `groups_apart`:
    the split keeps groups apart (a split column or data.split.group_column): the cross-fitted members
    choose their regularisation on the val rows, the only ones like new groups."""
    kinds = modality_kinds(base)
    present = set(kinds.values())
    out = {}
    probe = copy.deepcopy(base)
    probe.recipe.enabled = False  # a member is one model
    for m, kind in kinds.items():
        ec = encoder_config(probe, m)
        if kind in ("text", "image", "video"):  # a video: its image encoder frozen, its pooling over time trains
            ec.finetune.strategy = "frozen"
        elif kind == "audio":
            probe.model.encoders[m] = type(ec)(name="audio-stats")
        else:
            ec.name, ec.layers = "scratch", 1
    probe.model.fusion, probe.loss.aux_weight, probe.model.dropout = "concat", 1.0, 0.3
    # heads on a few hundred rows of frozen features overfit within epochs: a small step, strong decay
    probe.train.epochs, probe.train.patience, probe.train.lr, probe.train.weight_decay = 60, 10, 3e-4, 0.05
    if present & {"text", "image", "audio", "tabular"}:
        # first, the linear probe itself: logistic regression on the same frozen outputs (a table as it
        # is), C by cross-validation over train + val, fitted in seconds (training/convex.py): the
        # floor every other member has to add to
        cv = copy.deepcopy(probe)
        cv.model.head, cv.model.crossfit.rows = "convex", "labelled"
        cv.model.crossfit.choose_on = "val" if groups_apart else "folds"
        for m, kind in kinds.items():
            if kind == "tabular":
                cv.model.encoders[m] = type(encoder_config(cv, m))(name="table-stats")
        out["convex"] = cv
        if "tabular" in present and not any(t.type == "multilabel" for t in base.data.targets.values()):
            # gradient-boosted trees on the table's columns, bagged over the same folds (training/trees.py)
            tr = copy.deepcopy(cv)
            tr.model.head = "trees"
            out["trees"] = tr
    out["probe"] = probe
    if present & {"text", "image", "audio"}:
        # the same frozen outputs, compared row to row: k nearest training rows (nothing trained; seconds)
        nb = copy.deepcopy(probe)
        nb.model.head = "neighbours"
        out["neighbours"] = nb
    if "text" in present:
        ft = copy.deepcopy(probe)
        for m, kind in kinds.items():
            if kind == "text":
                ec = encoder_config(ft, m)
                # every block, not the word embeddings: rows a few hundred names long would move only
                # the rows of their own words, away from those of the words val and test bring; and a
                # third less time an epoch
                ec.finetune.strategy, ec.finetune.layers, ec.lr = "partial", ALL_BLOCKS, 3e-5
        ft.train.epochs, ft.train.patience, ft.train.lr, ft.train.warmup_ratio = 15, 6, 1e-4, 0.1
        out["finetune"] = ft
    if present & {"image", "audio", "video"}:
        sc = copy.deepcopy(probe)
        for m, kind in kinds.items():
            if kind in ("image", "audio", "video"):
                side = (sc.data.video.size if kind == "video" else None) or sc.data.image.size
                # a video: every frame through the encoder, so frames at half an image's side
                size = min(32 if kind == "video" else 64, side // 4 if side >= 128 else side)
                grid = AudioProcessor(m, sc.data.audio).feature_shape() if kind == "audio" else (size, size)
                sc.model.encoders[m] = type(encoder_config(sc, m))(
                    name="scratch", layers=1, heads=4, patch=scratch_patch(*grid),
                    input_size=None if kind == "audio" else size)
        sc.model.dim = 96
        sc.train.epochs, sc.train.patience, sc.train.lr = 30, 6, 1e-3
        sc.train.modality_dropout = 0.15
        out["scratch"] = sc
    return {k: v for k, v in out.items() if k not in base.recipe.exclude}


@torch.no_grad()
def image_seconds(name: str, side: int) -> float:
    """Seconds the image encoder `name` takes per image at `side` px on this machine, frozen: one call
    timed on a blank batch after a first one (the weights are not loaded: the arithmetic is the same).
    The batch holds about as many pixels as 64 images of 112 px (16 at 224 px, at most the 64 of the
    pass itself): small images in small batches would count the per-call overhead many times over."""
    from mmfit.models.encoders.spec import EncoderSpec, build_encoder

    batch = max(8, min(IMAGES_PER_CALL, int(IMAGES_PER_CALL * (112 / side) ** 2)))
    enc = build_encoder(name, EncoderSpec("image", input_size=side, load_weights=False)).eval()
    x = {"x": torch.zeros(batch, 3, side, side)}
    enc(x)
    t = time.perf_counter()
    enc(x)
    return (time.perf_counter() - t) / batch


def fit_frozen_passes(cfg: Config, count_rows: Callable[[], int], log: Callable,
                      seconds: Callable[[str, int], float] = image_seconds) -> float:
    """Keep the frozen pretrained image encoders' one pass over every row (the probe's and the
    fine-tuned members' inputs, computed once: training/embeddings.py) within PASS_SHARE of the time
    limit (or MIN_PASS, the larger). Where it would take longer (thousands of images, or a video's
    frames: 3,000 clips of 8 frames are 24,000 images) the images are made smaller (data.image.size,
    data.video.size; the arithmetic goes with the side squared), and at the encoder's smallest size
    a video takes fewer frames. The cost is measured on this machine (`seconds(encoder, side)` per
    image), so a faster one keeps more; `count_rows` is called only where there is such an encoder.
    Changes `cfg` (the run's config.yaml records it) and says what it did.
    -> the seconds the pass is expected to take (0 without a time limit, or without such encoders)."""
    limit = cfg.recipe.time_limit
    if limit is None or not cfg.recipe.fit_inputs:
        return 0.0
    cols = []  # (modality, encoder, images per row, the config section that holds their side)
    for m, kind in modality_kinds(cfg).items():
        ec = encoder_config(cfg, m)
        if kind in ("image", "video") and encoder_info(ec.name).pretrained and ec.input_size is None:
            own = kind == "video" and cfg.data.video.size is not None
            cols.append((m, ec.name, cfg.data.video.frames if kind == "video" else 1,
                         cfg.data.video if own else cfg.data.image))
    if not cols:
        return 0.0
    rows = count_rows()
    allowed, frames = max(PASS_SHARE * limit, MIN_PASS), cfg.data.video.frames
    if sum(rows * n * SLOW_IMAGE * (sec.size / 224) ** 2 for _, _, n, sec in cols) <= allowed:
        return 0.0  # a few images: within the limit on the slowest machine, not worth timing
    memo: dict = {}

    def cost(single_only: bool = False) -> float:
        total = 0.0
        for _, name, n, sec in cols:
            if (name, sec.size) not in memo:
                memo[name, sec.size] = seconds(name, sec.size)
            total += rows * (1 if single_only else n) * memo[name, sec.size]
        return total

    sections = list({id(sec): sec for *_, sec in cols}.values())
    sizes = [sec.size for sec in sections]
    floor = max(encoder_info(name).min_size for _, name, _, _ in cols)
    before = spent = cost()
    for _ in range(8):  # the side squared, then measured again: the arithmetic is not exactly quadratic
        if spent <= allowed or all(sec.size <= floor for sec in sections):
            break
        for sec in sections:
            sec.size = max(floor, int(sec.size * min(0.9, (allowed / spent) ** 0.5)) // 8 * 8)
        spent = cost()
    if spent > allowed and frames > 1 and any(n > 1 for *_, n, _ in cols):  # the smallest side: fewer frames
        still = cost(single_only=True)  # every column at one image a row
        per_frame = sum(rows * memo[name, sec.size] for _, name, n, sec in cols if n > 1)
        cfg.data.video.frames = max(1, min(frames, frames - int(np.ceil((spent - allowed) / per_frame))))
        spent = still + per_frame * (cfg.data.video.frames - 1)
    changes = [f"{'data.video.size' if sec is cfg.data.video else 'data.image.size'} {old} -> {sec.size}"
               for sec, old in zip(sections, sizes) if sec.size != old]
    if cfg.data.video.frames != frames:
        changes.append(f"data.video.frames {frames} -> {cfg.data.video.frames}")
    what = ", ".join(f"'{m}'" + (f" ({n} frames a row)" if n > 1 else "") for m, _, n, _ in cols)
    if changes:
        log(f"the frozen image encoders' one pass over {rows} rows of {what} would take about {before:.0f}s, more "
            f"than {allowed:.0f}s of the {limit:.0f}s time limit: {', '.join(changes)} (about {spent:.0f}s; "
            "recipe.fit_inputs=false keeps them)")
    if spent > allowed:
        log(f"the frozen image encoders' one pass takes about {spent:.0f}s of the {limit:.0f}s time limit even so: "
            "the members after it get less time")
    return spent


@torch.no_grad()
def _logits(model, data, pre, drop=()) -> dict[str, dict[str, np.ndarray]]:
    """Every candidate head's logits (or standardised values) over a split."""
    model.eval()
    device = next(model.parameters()).device
    primary = next(iter(pre.targets))
    out: dict[str, dict[str, list]] = {}
    for batch in data.batches(128):
        batch = batch.to(device)
        present = {m: (torch.zeros_like(p) if m in drop else p) for m, p in batch.present.items()}
        res = model(batch.inputs, present)
        for t, proc in pre.targets.items():
            for head, logits in candidate_outputs(res, t, primary).items():
                out.setdefault(t, {}).setdefault(head, []).append(logits.float().cpu().numpy())
    return {t: {h: np.concatenate(v) for h, v in hs.items()} for t, hs in out.items()}


def loaded_with_outputs(run: Run, cache: Optional[FeatureCache] = None, df=None) -> tuple:
    """A trained member, its splits (from its manifest, or `df` where it was trained from a
    DataFrame or a class folder) with its frozen encoders' outputs put in from the embedding cache
    (computed where missing) -> (loaded run, splits, frozen modalities)."""
    loaded = run.load()
    splits = loaded.data(df)
    frozen = cached_modalities(loaded.model, lambda m: False)
    cache_outputs(loaded.model, splits, frozen, cache or FeatureCache(loaded.cfg.data.cache_dir),
                  loaded.cfg.data.shard_rows, loaded.cfg.model.fusion == "attention", "cpu", log=lambda *a: None)
    return loaded, splits, frozen


def member_logits(run: Run, conditions: list[tuple[str, list[str]]], cache: FeatureCache, log: Callable,
                  df=None) -> dict:
    """A trained member's candidate logits: with all modalities ('all') on val and test, and under
    each other (ablation) condition on test, where the ensemble's ablation is reported
    -> {condition: {split: {task: {head: logits}}}}, and the splits."""
    loaded, splits, _ = loaded_with_outputs(run, cache, df)
    return condition_logits(loaded.model, splits, loaded.pre, conditions), splits, loaded.pre


def condition_logits(model, splits: dict, pre, conditions: list[tuple[str, list[str]]]) -> dict:
    """{condition: {split: {task: {head: logits}}}}: val and test with all modalities, test alone under
    the other conditions."""
    return {name: {s: _logits(model, splits[s], pre, drop) for s in ("val", "test")
                   if len(splits[s]) and (name == "all" or s == "test")} for name, drop in conditions}


def out_of_fold(run: Run, val) -> dict[str, dict[str, np.ndarray]]:
    """A cross-fitted member's candidate logits on the val rows from its out-of-fold predictions
    (RUN/oof.npz), in the val split's row order -> {task: {head: logits}}."""
    return oof_logits(run.read_arrays(OOF), val.rows.numpy())


def save_candidates(run: Run, logits: dict, splits: dict) -> None:
    """A member's candidate logits with all modalities and the targets, on val and test, into
    RUN/candidates.npz ('logits/<split>/<task>/<head>', 'y/<split>/<task>', 'mask/<split>/<task>')."""
    arrays = {}
    for s, ts in logits["all"].items():
        for t, hs in ts.items():
            arrays.update({f"logits/{s}/{t}/{h}": v for h, v in hs.items()})
            arrays[f"y/{s}/{t}"] = splits[s].targets[t].numpy()
            arrays[f"mask/{s}/{t}"] = splits[s].target_mask[t].numpy()
    run.write_arrays(CANDIDATES, arrays)


def _loss(kind: str, y: np.ndarray, mask: np.ndarray) -> Callable[[np.ndarray], float]:
    """A candidate's (or a mixture's) validation loss: log loss of the (calibrated) probabilities,
    or the mean squared error of values. A proper score and a smooth one: on a few hundred rows
    macro-F1 moves in steps, and the selection would stop at the first plateau."""

    def loss(scores: np.ndarray) -> float:
        p, t = scores[mask], y[mask]
        if kind == "regression":
            return float(((p - t) ** 2).mean())
        p = np.clip(p, 1e-7, 1 - 1e-7)
        if kind == "classification":
            return float(-np.log(p[np.arange(len(p)), t.astype(int)]).mean())
        return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).mean())

    return loss


def calibrate(logits: dict, splits: dict, pre) -> tuple[dict, dict]:
    """Each candidate's temperature, fitted on validation -> (temperatures {task: {(member, head): T}},
    scores: the logits turned into calibrated probabilities (or values), in the shape of `logits`)."""
    val = splits["val"]
    temps: dict = {}
    for t, proc in pre.targets.items():
        y, mask = val.targets[t].numpy(), val.target_mask[t].numpy()
        temps[t] = {(k, h): fit_temperature(v[mask], y[mask], proc.type)
                    for k, lg in logits.items() for h, v in lg["all"]["val"][t].items()}
    return temps, {k: to_member_scores(lg, k, temps, pre) for k, lg in logits.items()}


def to_member_scores(logits: dict, member: str, temps: dict, pre) -> dict:
    """One member's logits {condition: {split: {task: {head: logits}}}} as calibrated scores, under the
    temperatures fitted for `member` (a refit member takes those of the member it repeats)."""
    return {c: {s: {t: {h: to_scores(torch.from_numpy(v), pre.targets[t].type, temps[t][(member, h)]).numpy()
                        for h, v in hs.items()} for t, hs in ts.items()} for s, ts in ss.items()}
            for c, ss in logits.items()}


def select(scores: dict, splits: dict, pre) -> tuple[dict, dict]:
    """Ensemble selection per task on validation, by the loss of the mixture -> (weights
    {task: {(member, head): w}}, the candidates' validation metric and loss)."""
    weights, report = {}, {}
    val = splits["val"]
    for t, proc in pre.targets.items():
        y, mask = val.targets[t].numpy(), val.target_mask[t].numpy()
        cands = {(k, h): v for k, sc in scores.items() for h, v in sc["all"]["val"][t].items()}
        loss, key = _loss(proc.type, y, mask), default_metric(proc.type)
        report[t] = {f"{k}/{h}": {key: float(task_metrics(proc.type, y[mask], v[mask], proc.classes)[key]),
                                  "loss": loss(v)} for (k, h), v in cands.items()}
        weights[t] = ensemble_selection(cands, lambda v: -loss(v))
    return weights, report


def _combined(scores: dict, weights: dict, condition: str, split: str) -> dict[str, np.ndarray]:
    return {t: sum(w * scores[k][condition][split][t][h] for (k, h), w in ws.items() if w > 0)
            for t, ws in weights.items()}


def ensemble_evaluation(scores: dict, weights: dict, data, pre, split: str, conditions) -> dict:
    """Metrics of the weighted ensemble on a split (with the ablation on test), from the members'
    candidate outputs: what evaluation.predict.evaluate_data gives for a single model."""
    from mmfit.evaluation.predict import metrics_from_predictions

    def preds(condition):
        out = {}
        for t, v in _combined(scores, weights, condition, split).items():
            proc = pre.targets[t]
            y = data.targets[t].numpy()
            if proc.type == "regression":
                v, y = v * proc.std + proc.mean, y * proc.std + proc.mean
            out[t] = {"output": v, "y": y, "mask": data.target_mask[t].numpy()}
        return out

    result = {"metrics": metrics_from_predictions(preds("all"), pre, full=True),
              "modality_presence": {m: float(v.float().mean()) for m, v in data.present.items()}}
    if split == "test" and len(conditions) > 1:
        result["ablation"] = {name: metrics_from_predictions(preds(name), pre) for name, _ in conditions[1:]}
    return result


def fit(cfg: Config, df=None, run_dir: Optional[Path] = None, console=None, roles: Optional[list] = None,
        keep_table: bool = False) -> Path:
    """Train the members within `cfg.recipe.time_limit`, select their ensemble on validation, refit
    the chosen ones on train + val where the time allows (cfg.recipe.refit), and write the ensemble
    run (its config.yaml: `cfg` with the recipe on). `keep_table`: `df` (the table made from a class
    folder) is written into the run as its manifest (RUN/manifest.csv), so that the run, like one
    from a manifest file, can be evaluated and reported on its own splits later."""
    from rich.console import Console

    t0 = time.time()
    console = console or Console()
    other = [t for t, tc in cfg.data.targets.items() if tc.type in ("matching", "generation")]
    if other:
        raise ConfigError(f"data.targets.{other[0]}: the small-data recipe combines class probabilities and "
                          "values, not embeddings or texts; train it as one model (recipe.enabled: false)")
    cfg, given = resolve_paths(cfg)
    cfg.recipe.enabled = True
    out = Run(run_dir or Path(cfg.train.output_dir) / time.strftime("fit-%Y%m%d-%H%M%S"))
    if out.path.exists() and any(out.path.iterdir()):
        raise FileExistsError(f"{out} already exists and is not empty; choose another -o/--output")
    out.create()
    rows = None if df is None else len(df)
    if keep_table and df is not None:
        cfg.data.manifest = str((out.path / "manifest.csv").resolve())
        df.to_csv(cfg.data.manifest, index=False)
        df = None
    first_pass = fit_frozen_passes(cfg, lambda: rows if rows is not None else len(read_manifest(cfg.data.manifest)),
                                   console.print)
    team = Members(out, df, _conditions(cfg), cfg.recipe, t0, console, first_pass)
    team.train_all(member_configs(cfg, split_keeps_groups(cfg, df)))
    temps, scores, weights, report = team.choose()
    if cfg.recipe.refit:
        team.refit_chosen(weights)
    scores = team.with_ablation(weights, temps)
    _write(out, (cfg, given), team, (weights, temps, report), scores, roles, time.time() - t0)
    console.print(f"ensemble of {', '.join(team.runs)} in {time.time() - t0:.0f}s: {out}")
    return out.path


def split_keeps_groups(cfg: Config, df=None) -> bool:
    """Whether the split is the data's own (a split column: speakers, sites, dates kept apart) or by
    groups (data.split.group_column), rather than rows dealt at random."""
    if cfg.data.split.group_column:
        return True
    if df is not None:
        return cfg.data.split.column in df.columns
    from mmfit.data.manifest import manifest_chunks

    return cfg.data.split.column in next(manifest_chunks(None, cfg.data.manifest, 1)).columns


class Members:
    """The members as they are trained: their runs, the time each took, their candidate logits, and
    the splits they share. The time limit is shared out: the probe first (half of what the frozen
    encoders' one pass leaves, plus the pass), each other
    planned member an equal part of what is left; then, while the budget allows, more of the
    trainable kinds the selection weighs so far (`finetune-2`, `scratch-2`, ...: see extra_member;
    averaging members that differ lowers the variance a few hundred rows leave). Each member's
    candidate outputs (all modalities, val and test) are taken right after it trains, so its time
    counts in full; under the ablation conditions only for the chosen members, at the end (RESERVE)."""

    def __init__(self, out: Run, df, conditions: list, recipe, t0: float, console,
                 first_pass: float = 0.0):
        self.out, self.df, self.conditions, self.console, self.t0 = out, df, conditions, console, t0
        self.first_pass = first_pass  # the frozen encoders' one pass, expected: the probe's first epoch runs it
        self.limit = recipe.time_limit
        self.budget = None if recipe.time_limit is None else recipe.time_limit * (1 - RESERVE)
        self.plans: dict[str, Config] = {}
        self.runs: dict[str, Run] = {}
        self.took: dict[str, float] = {}
        self.logits: dict = {}
        self.from_probe: set[str] = set()  # LP-FT members: they start from the probe's weights
        self.refits: dict[str, Run] = {}  # member -> its refit on train + val
        self.not_refit: dict[str, dict] = {}  # chosen member -> why it was not refit (seconds needed, left)
        self.labelled: set[str] = set()  # members fitted on train + val already (out-of-fold val logits)
        self.refit_logits: dict = {}
        self.splits = self.pre = self.rows = None
        self.cache: Optional[FeatureCache] = None

    def left(self) -> float:
        return float("inf") if self.budget is None else self.budget - (time.time() - self.t0)

    def _train(self, name: str, mcfg: Config, share: Optional[float], refit_of: Optional[str] = None) -> None:
        # a share the members before used up: one epoch, as any limit already passed (a limit must be positive)
        mcfg.train.time_limit = None if share is None else max(share, 1e-3)
        what = f"refit of {refit_of} on train + val, {mcfg.train.epochs} epochs" if refit_of else ""
        self.console.rule(f"member {name}" + (f" ({what})" if what else "") + (f" (up to {share:.0f}s)" if share else ""))
        t = time.time()
        base = refit_of or name
        init = None
        if base in self.from_probe:
            init = (self.refits.get("probe") or self.runs["probe"]).path
        # a member is never resumed: no checkpoints/, its weights in model.safetensors, the frozen
        # encoders' beside the members, once for all
        session = trained(mcfg, df=self.df, run_dir=self.out / MEMBERS / name, init=init, console=self.console,
                          resumable=False, shared_frozen=self.out / MEMBERS)
        run, splits, pre = session.run, session.splits, session.pre
        # the ablation conditions only for members the selection weighs (with_ablation): a refit is one
        logits = condition_logits(session.model, splits, pre, self.conditions if refit_of else self.conditions[:1])
        del session
        if mcfg.model.head in ("convex", "trees") and mcfg.model.crossfit.rows == "labelled":
            logits["all"]["val"] = out_of_fold(run, splits["val"])  # its fit saw the val rows: their OOF logits
            self.labelled.add(name)
        save_candidates(run, logits, splits)
        if refit_of:
            if splits["test"].rows.tolist() != self.rows[2]:
                raise RuntimeError(f"the refit of {refit_of} holds other test rows than its member")
            self.refits[refit_of], self.refit_logits[refit_of] = run, logits
            return
        rows = [splits[s].rows.tolist() for s in ("train", "val", "test")]
        if self.rows is not None and rows != self.rows:
            raise RuntimeError(f"member {name} split the rows differently from the others")
        self.splits, self.pre, self.rows = splits, pre, rows
        self.plans[name], self.runs[name], self.logits[name] = mcfg, run, logits
        self.took[name] = time.time() - t

    def train_all(self, plans: dict[str, Config]) -> None:
        """The planned members in order, then more seeds of the trainable ones while the budget allows.
        The members fitted in closed form (CLOSED_FORM: no epochs) take what they take, and always
        run; the first that trains by epochs (the probe) gets half of what is left, and its first
        epoch pays the frozen encoders' pass where no member before it did; the others an equal part."""
        self.cache = FeatureCache(next(iter(plans.values())).data.cache_dir)
        names = list(plans)
        for i, (name, mcfg) in enumerate(plans.items()):
            share = None
            if self.budget is not None and name not in CLOSED_FORM:
                left = self.left()
                first = not any(n in self.runs for n in names[:i] if n not in CLOSED_FORM)
                pending = [n for n in names[i:] if n not in CLOSED_FORM]
                if first:  # the probe: half of what is left, and the frozen pass if it is still to come
                    paid = any(n in self.runs for n in names[:i])
                    share = (0.0 if paid else self.first_pass) + 0.5 * (left - (0.0 if paid else self.first_pass))
                else:
                    share = left / len(pending)
                if not first and share < 0.08 * self.limit:
                    self.console.print(f"{name}: not trained ({left:.0f}s of the time limit left)")
                    continue
            if name == "finetune":
                self.from_probe.add(name)
            self._train(name, mcfg, share)
        self.extras()

    def extras(self) -> None:
        """More members of the trainable kinds, while the budget allows and the selection weighs the kind."""
        again = [n for n in ("finetune", "scratch") if n in self.runs]
        for k in range(2, 8 if self.budget is not None else 1):
            for name in list(again):
                if not self._weighted(name):
                    self.console.print(f"no more {name} members: the selection gives them no weight")
                    again.remove(name)
                    continue
                if self.took[name] > self.left():  # another would not fit: no more of it
                    again.remove(name)
                    continue
                mcfg, from_probe = extra_member(name, self.plans[name], k, name in self.from_probe)
                if from_probe:
                    self.from_probe.add(f"{name}-{k}")
                self._train(f"{name}-{k}", mcfg, self.left())

    def _weighted(self, kind: str) -> bool:
        """Whether the selection, as it stands, weighs any member of this kind (`scratch`, `scratch-2`, ...)."""
        weights = self.choose()[2]
        return any(w > 0 and (k == kind or k.startswith(kind + "-"))
                   for ws in weights.values() for (k, _), w in ws.items())

    def choose(self) -> tuple[dict, dict, dict, dict]:
        """-> (temperatures, calibrated scores, weights, the candidates' validation report)."""
        temps, scores = calibrate(self.logits, self.splits, self.pre)
        weights, report = select(scores, self.splits, self.pre)
        return temps, scores, weights, report

    def _to_refit(self, weights: dict) -> list[str]:
        """The members with weight, and the probe where an LP-FT member among them starts from it;
        in the order they were trained (the probe first)."""
        chosen = _chosen(weights)
        if chosen & self.from_probe:
            chosen.add("probe")
        return [k for k in self.runs if k in chosen and k not in self.labelled]

    def refit_cost(self, name: str) -> float:
        """What training `name` again on train + val for its best epoch count would take: its own
        overhead (setup, outputs) plus that many epochs, each longer by the val rows."""
        run = self.runs[name]
        epochs = [h["time_s"] for h in run.history()]
        if not epochs:
            return 0.0
        n_train, n_val = len(self.rows[0]), len(self.rows[1])
        overhead = max(0.0, self.took[name] - sum(epochs))
        return overhead + self.refit_epochs(name) * float(np.median(epochs)) * (n_train + n_val) / n_train

    def refit_epochs(self, name: str) -> int:
        return int((self.runs[name].evaluation("val") or {}).get("best_epoch", len(self.runs[name].history()) - 1)) + 1

    def refit_chosen(self, weights: dict) -> None:
        """Each chosen member trained again on train + val with its best epoch count (AutoGluon's
        refit_full): the same config, seed and preprocessing, a quarter or so more rows. Its weight and
        temperature stay those chosen for the member; one that would overrun the time limit is left
        as it is."""
        for name in self._to_refit(weights):
            cost, left = self.refit_cost(name), self.left()
            if cost > left:
                self.console.print(f"{name}: not refit on train + val (about {cost:.0f}s needed, {left:.0f}s left)")
                self.not_refit[name] = {"needed_s": round(cost, 1), "left_s": round(left, 1)}
                continue
            mcfg = copy.deepcopy(self.plans[name])
            if mcfg.model.head == "neighbours":  # k and the temperature as validation chose them
                mcfg.model.neighbours = self.runs[name].config().model.neighbours
            mcfg.data.split.refit, mcfg.train.selection = True, "last"
            mcfg.train.epochs = self.refit_epochs(name)
            self._train(f"{name}-refit", mcfg, None if self.budget is None else left, refit_of=name)

    def with_ablation(self, weights: dict, temps: dict) -> dict:
        """The chosen members' test logits under each ablation condition too (a member without weight
        never needs them: on the demo that saved about a minute of a 10-minute limit) -> the members'
        calibrated scores, all conditions included where computed."""
        chosen = _chosen(weights)
        if len(self.conditions) > 1:
            for name in [k for k in self.runs if k in chosen and k not in self.refits]:
                extra, _, _ = member_logits(self.runs[name], self.conditions[1:], self.cache, self.console.print,
                                            self.df)
                self.logits[name].update(extra)
        return {k: to_member_scores(lg, k, temps, self.pre) for k, lg in self.logits.items()}

    def final_scores(self, temps: dict, scores: dict) -> dict:
        """Test-time scores of every member: its refit's where there is one (under its temperatures)."""
        out = dict(scores)
        for k, lg in self.refit_logits.items():
            out[k] = to_member_scores(lg, k, temps, self.pre)
        return out


def _chosen(weights: dict) -> set[str]:
    """The members the selection gives weight, in any task."""
    return {k for ws in weights.values() for (k, _), w in ws.items() if w > 0}


def _conditions(cfg: Config) -> list[tuple[str, list[str]]]:
    mods = list(modality_kinds(cfg))
    out = [("all", [])]
    if len(mods) > 1:
        out += [(f"without_{m}", [m]) for m in mods] + [(f"only_{m}", [o for o in mods if o != m]) for m in mods]
    return out


def _write(out: Run, config, team: Members, choice, scores, roles, seconds) -> None:
    (cfg, given), (weights, temps, report) = config, choice
    splits, pre, conditions = team.splits, team.pre, team.conditions
    out.copy_from(team.runs["probe"])  # the members read the data alike: the ensemble reads it as the probe does
    out.save_config(cfg, given)
    kinds = {t: p.type for t, p in pre.targets.items()}
    used = {k: team.refits.get(k, r) for k, r in team.runs.items()}
    spec = {"members": {k: f"{MEMBERS}/{r.name}" for k, r in used.items()}, "primary": next(iter(pre.targets)),
            "kinds": kinds,
            "weights": {t: [{"member": k, "head": h, "weight": w, "temperature": temps[t][(k, h)],
                             "trained_on": "train+val" if k in team.refits or k in team.labelled else "train"}
                            for (k, h), w in sorted(ws.items()) if w > 0] for t, ws in weights.items()},
            "validation": report, "seconds": round(seconds, 1)}
    if team.refits:
        spec["refit"] = {k: {"from": f"{MEMBERS}/{k}", "epochs": r.config().train.epochs,
                             "train_rows": len(team.rows[0]) + len(team.rows[1])} for k, r in team.refits.items()}
    if team.not_refit:  # chosen, trained on train only: the time limit left too little to train it again
        spec["not_refit"] = team.not_refit
    if roles:
        spec["roles"] = [{"column": c.column, "role": c.role, "reason": c.reason} for c in roles]
    out.write_json(ENSEMBLE, spec)
    params = {k: Run(r.path).read_json(PARAMS) or {} for k, r in used.items()}
    out.write_json(PARAMS, {"params": sum(p.get("params", 0) for p in params.values()), "members": params})
    final = team.final_scores(temps, scores)
    for split in ("val", "test"):
        if len(splits[split]):
            # validation: the members as selected (a refit member has trained on those rows)
            res = ensemble_evaluation(scores if split == "val" else final, weights, splits[split], pre, split,
                                      conditions)
            res.update(split=split, run=str(out), ensemble=spec["weights"])
            if split == "val" and team.refits:
                res["note"] = ("scored by the members before their refit on train + val "
                               f"({', '.join(team.refits)}); the ensemble itself has trained on these rows")
            out.write_evaluation(split, res)
