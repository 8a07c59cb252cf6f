"""The recipe's members: what each one is, as a config of an ordinary run.

`member_configs` turns the base config into the first members (convex, trees, probe, neighbours,
finetune, scratch: what each is for is in recipe/__init__.py); `extra_member` makes the later ones
while the time lasts (FINETUNE_PORTFOLIO: fresh heads, the top blocks; other seeds); `scratch_patch`
sizes a from-scratch member's tokens; `split_keeps_groups` says whether the validation rows must be
a fold of their own.
"""

from __future__ import annotations

import copy
import math

from mmfit.config import Config, encoder_config, modality_kinds
from mmfit.data.modalities.audio import AudioProcessor
from mmfit.registry import encoder_info
from mmfit.tasks import task_kind


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
        if "tabular" in present and not any(task_kind(t.type).label_set for t in base.data.targets.values()):
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


def split_keeps_groups(cfg: Config, df=None) -> bool:
    """Whether the split is the data's own (a split column: speakers, sites, dates kept apart) or by
    groups (data.split.group_column), rather than rows dealt at random."""
    if cfg.data.split.group_column:
        return True
    if df is not None:
        return cfg.data.split.column in df.columns
    from mmfit.data.manifest import manifest_chunks

    return cfg.data.split.column in next(manifest_chunks(None, cfg.data.manifest, 1)).columns
