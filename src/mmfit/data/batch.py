"""The Batch contract and the in-memory tensor store that serves batches of it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Batch:
    """Per modality its input tensors and a presence mask; per task the target and its mask.

    A missing modality is `present[m] == False` for that row, never a special value in the data.
    """

    inputs: dict[str, dict[str, torch.Tensor]]
    present: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    target_mask: dict[str, torch.Tensor] = field(default_factory=dict)
    rows: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(next(iter(self.present.values())).shape[0])

    def to(self, device) -> "Batch":
        mv = lambda d: {k: v.to(device, non_blocking=True) for k, v in d.items()}  # noqa: E731
        return Batch({m: mv(x) for m, x in self.inputs.items()}, mv(self.present), mv(self.targets),
                     mv(self.target_mask), self.rows)


class TensorData:
    """All preprocessed rows of one split, held as tensors; `batch(idx)` slices them."""

    def __init__(self, inputs, present, targets, target_mask, rows):
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        self.inputs = {m: {k: t(v) for k, v in d.items()} for m, d in inputs.items()}
        self.present = {m: t(v) for m, v in present.items()}
        self.targets = {k: t(v) for k, v in targets.items()}
        self.target_mask = {k: t(v) for k, v in target_mask.items()}
        self.rows = t(np.asarray(rows, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def batch(self, idx: torch.Tensor) -> Batch:
        inputs = {}
        for m, d in self.inputs.items():
            inputs[m] = {}
            for k, v in d.items():
                x = v[idx]
                if x.dtype == torch.uint8:
                    x = x.float().div_(255.0)  # images are cached as uint8
                elif x.dtype == torch.float16:
                    x = x.float()  # audio features are cached as float16
                inputs[m][k] = x
        return Batch(inputs, {m: v[idx] for m, v in self.present.items()},
                     {k: v[idx] for k, v in self.targets.items()},
                     {k: v[idx] for k, v in self.target_mask.items()}, self.rows[idx])

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False, shard: tuple[int, int] = (0, 1)):
        """Batches of `batch_size` rows; with shard=(rank, world) each process of a distributed run
        gets its share (rows rank, rank+world, ...) of every global batch, in the same order
        everywhere (the same `generator` seed), and never an empty share."""
        n = len(self)
        rank, world = shard
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            if drop_last and len(idx) < batch_size and s > 0:
                break
            if world > 1:
                idx = idx[rank::world] if len(idx) > rank else idx[:1]
            yield self.batch(idx)
