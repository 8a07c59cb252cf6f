"""Frozen encoders run once: their outputs for every row are computed a single time and reused by
every epoch, every later run and every tune trial over the same rows.

A frozen encoder (finetune: frozen, or one without weights such as audio-stats) whose modality is
not augmented gives the same output for a row in every epoch. Its outputs are stored in the feature
cache in blocks of data.shard_rows rows, keyed by the encoder (a hash of its weights and class),
whether tokens are kept (attention fusion reads them; concat and gated read the pooled vector
only) and the content of each row's inputs. A split's inputs for that modality are then replaced
by the outputs (`pooled`, and `tokens` / `token_mask`), which MultimodalModel.encode takes as
they are. A video's frame encoder with its image encoder frozen stores that image encoder's
per-frame vectors instead (`frame_features`), and its temporal pooling still trains on them. The
model itself keeps its encoders: prediction on new data runs them as usual.
"""

from __future__ import annotations

import hashlib
import time
from typing import Callable, Optional

import numpy as np
import torch

from mmfit.data.batch import TensorData
from mmfit.data.cache import FeatureCache, RowView, ShardedArray
from mmfit.models.finetune import backbone, is_frozen

VERSION = 1


def fingerprint(encoder: torch.nn.Module) -> str:
    """What decides a frozen encoder's outputs: its class, its structure and every weight."""
    h = hashlib.sha1(f"{type(encoder).__module__}.{type(encoder).__qualname__}\n{encoder}".encode())
    for k, v in encoder.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_modalities(model, augmented: Callable[[str], bool], sharded: bool = False) -> list[str]:
    """Modalities whose outputs can be computed once: a frozen encoder (or the frozen image encoder of
    a video's frame encoder: `front_outputs`), inputs not augmented."""
    if sharded:  # FSDP: an encoder's weights are spread over the processes
        return []
    return [m for m, enc in model.encoders.items()
            if (is_frozen(enc) or (hasattr(enc, "front_outputs") and is_frozen(backbone(enc)))) and not augmented(m)]


def frozen_front(encoder) -> bool:
    """An encoder that trains over a frozen front (a video's frame encoder over a frozen image encoder):
    what is stored is the front's output (`front_outputs`), which `forward` then takes in place of the
    pixels; the front's weights (`backbone`) are what decides it."""
    return not is_frozen(encoder) and hasattr(encoder, "front_outputs")


def output_names(encoder, tokens: bool) -> tuple[str, ...]:
    """The arrays stored for an encoder: a frozen front's (a video's per-frame vectors), else its outputs."""
    if frozen_front(encoder):
        return tuple(encoder.front_names)
    return ("pooled", "tokens", "token_mask") if tokens else ("pooled",)


def _row_keys(data: TensorData, m: str, rows: np.ndarray) -> list[str]:
    """A content hash of each row's inputs for modality m (what the encoder would read)."""
    arrays = {}
    for k, v in sorted(data.inputs[m].items()):
        arrays[k] = v[rows] if isinstance(v, RowView) else v[torch.from_numpy(rows)].numpy()
    keys = []
    for i in range(len(rows)):
        h = hashlib.sha1()
        for k, a in arrays.items():
            h.update(k.encode())
            h.update(np.ascontiguousarray(a[i]).tobytes())
        keys.append(h.hexdigest())
    return keys


IMAGES_PER_CALL = 64  # a video's rows hold many frames: as many images a call as for an image column


@torch.no_grad()
def _encode(encoder, data: TensorData, m: str, rows: np.ndarray, names: tuple[str, ...], device,
            batch: int = IMAGES_PER_CALL) -> dict:
    """The stored arrays (output_names) for `rows`; arrays of vectors per token or frame in float16."""
    parts: dict[str, list] = {k: [] for k in names}
    front = frozen_front(encoder)
    if front:  # a row holds `count` images: 64 clips of 8 frames in one call ran
        batch = max(1, batch // encoder.count)  # twice as slow an image on a CPU (memory-bound)
    was = backbone(encoder).training
    backbone(encoder).eval()
    for s in range(0, len(rows), batch):
        b = data.batch(torch.from_numpy(rows[s : s + batch]))
        x = {k: v.to(device) for k, v in b.inputs[m].items()}
        if front:
            out = encoder.front_outputs(x)
        else:
            o = encoder(x)
            out = {"pooled": o.pooled.float(), "tokens": o.tokens, "token_mask": o.mask}
        for k in names:
            v = out[k]
            parts[k].append((v.to(torch.float16) if v.dim() == 3 and v.is_floating_point() else v).cpu().numpy())
    backbone(encoder).train(was)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _bases(splits: dict[str, TensorData], m: str) -> tuple[dict[str, ShardedArray], dict[str, np.ndarray]] | None:
    """The manifest-wide arrays behind every split's inputs of m, and each split's rows of them; None
    when the splits hold their own copies (data.in_memory)."""
    bases, rows = None, {}
    for name, data in splits.items():
        views = data.inputs[m]
        if not all(isinstance(v, RowView) for v in views.values()):
            return None
        here = {k: v.base for k, v in views.items()}
        if bases is None:
            bases = here
        elif any(here[k] is not bases[k] for k in here):
            return None
        rows[name] = next(iter(views.values())).rows
    return bases, rows


def cache_outputs(model, splits: dict[str, TensorData], modalities: list[str], cache: FeatureCache,
                  block: int, tokens: bool, device, log: Callable = print,
                  share: Optional[tuple[int, int]] = None) -> dict[str, dict]:
    """Replace each split's inputs of `modalities` by the frozen encoder's outputs, computed for the
    rows the cache does not hold yet. The outputs are computed over the manifest's rows (blocks of
    `block`, keyed by their content), so another split of the same data, another seed, another run
    or a tune trial finds them. -> per modality {"rows", "computed", "seconds"}.

    `share` (rank, world): only compute the missing blocks whose number is rank modulo world into the
    cache, and leave the splits as they are (each rank of a DDP run its share, before every rank reads
    them all with a second call)."""
    report = {}
    number = -1  # the blocks' running number over modalities and units, which `share` deals out
    for m in modalities:
        t0 = time.time()
        enc = model.encoders[m]
        names = output_names(enc, tokens)
        config = {"kind": "embedding", "version": VERSION, "outputs": names,
                  "encoder": fingerprint(backbone(enc) if frozen_front(enc) else enc)}
        found = _bases(splits, m)
        if found is None:  # each split on its own
            units = dict(splits)
        else:
            bases, rows = found
            n = len(next(iter(bases.values())))
            whole = TensorData({m: {k: RowView(b, np.arange(n)) for k, b in bases.items()}},
                               {m: np.ones(n, bool)}, {}, {}, np.arange(n))
            units = {"*": whole}
        outputs, computed, total = {}, 0, 0
        for unit, data in units.items():
            parts: dict[str, list] = {k: [] for k in names}
            for s in range(0, len(data), block):
                number += 1
                if share is not None and number % share[1] != share[0]:
                    continue
                idx = np.arange(s, min(len(data), s + block))
                key = cache.key(config, _row_keys(data, m, idx))
                hits = [cache.load(f"embedding-{k}", key) for k in names]
                if all(h is not None for h in hits):
                    for k, h in zip(names, hits):
                        parts[k].append(h["path"])
                    continue
                out = _encode(enc, data, m, idx, names, device)
                for k in names:
                    parts[k].append(cache.put(f"embedding-{k}", key, out[k], np.ones(len(idx), bool), []))
                computed += len(idx)
            total += len(data)
            if len(data) and share is None:
                outputs[unit] = {k: ShardedArray(parts[k]) for k in names}
        report[m] = {"rows": total, "computed": computed, "seconds": round(time.time() - t0, 1)}
        if share is not None:
            continue
        for split, data in splits.items():
            if len(data):
                arrays, rows = (outputs["*"], found[1][split]) if found else (outputs[split], np.arange(len(data)))
                data.inputs[m] = {k: RowView(a, rows) for k, a in arrays.items()}
        log(f"{m}: frozen encoder's outputs for {total} rows, {computed} computed "
            f"({total - computed} from the cache) in {report[m]['seconds']}s")
    return report


@torch.no_grad()
def pooled_rows(model, data: TensorData, read: list[str], tasks, batch_size: int, device) -> tuple:
    """The encoders' pooled outputs and presence of the modalities `read`, and each task's targets and
    target mask, over every row of a split, on the CPU -> (pooled, present, targets, masks), dicts
    of tensors [N, ...] (the heads that read frozen features take them from here)."""
    model.eval()
    pooled: dict = {m: [] for m in read}
    present: dict = {m: [] for m in read}
    targets: dict = {t: [] for t in tasks}
    masks: dict = {t: [] for t in tasks}
    for batch in data.batches(batch_size):
        batch = batch.to(device)
        for m in read:
            pooled[m].append(model.encode(m, batch.inputs[m]).pooled.float().cpu())
            present[m].append(batch.present[m].cpu())
        for t in tasks:
            targets[t].append(batch.targets[t].cpu())
            masks[t].append(batch.target_mask[t].cpu())

    def cat(d):
        return {k: torch.cat(v) if v else torch.zeros(0) for k, v in d.items()}

    return cat(pooled), cat(present), cat(targets), cat(masks)
