"""The recipe's time: how `recipe.time_limit` is shared out.

RESERVE of it is kept for selecting, evaluating and writing the ensemble. Before any member trains,
the frozen pretrained image encoders' one pass over every row (the probe's and the fine-tuned members'
inputs, computed once: training/embeddings.py) is kept within PASS_SHARE of it (`fit_frozen_passes`:
smaller images, then fewer video frames, timed on this machine by `image_seconds`). What remains is
shared by the members (recipe/orchestrate.py `Members`); each member lays its learning-rate schedule
over the epochs that fit in its share (training/loop.py `plan_schedule`, the loop's own time limit,
which any run with `train.time_limit` uses).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from mmfit.config import Config, encoder_config, modality_kinds
from mmfit.registry import encoder_info
from mmfit.training.embeddings import IMAGES_PER_CALL


RESERVE = 0.08  # of the time limit, kept for selecting, evaluating and writing the ensemble
PASS_SHARE = 1 / 3  # of the time limit: the most the frozen image encoders' one pass over every row may take
MIN_PASS = 60.0  # seconds: a shorter pass is not worth smaller images
SLOW_IMAGE = 0.5  # seconds an image at 224 px takes a pretrained encoder on the slowest machine we expect


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
