"""The Batch contract, the store of a split's rows that serves batches of it, and the loader
that assembles batches in worker processes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mmfit.data.cache import RowView


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

    def pin_memory(self) -> "Batch":
        """Page-locked copies (torch's DataLoader calls this with pin_memory=True)."""
        pin = lambda d: {k: v.pin_memory() for k, v in d.items()}  # noqa: E731
        return Batch({m: pin(x) for m, x in self.inputs.items()}, pin(self.present), pin(self.targets),
                     pin(self.target_mask), self.rows)


class TensorData:
    """All preprocessed rows of one split; `batch(idx)` slices them. Arrays are held as tensors;
    a lazy view (file features in the cache's mapped shards, mmfit.data.cache.RowView) is read
    only for the rows of each batch."""

    def __init__(self, inputs, present, targets, target_mask, rows):
        t = lambda a: a if isinstance(a, RowView) else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        self.inputs = {m: {k: t(v) for k, v in d.items()} for m, d in inputs.items()}
        self.present = {m: t(v) for m, v in present.items()}
        self.targets = {k: t(v) for k, v in targets.items()}
        self.target_mask = {k: t(v) for k, v in target_mask.items()}
        self.rows = t(np.asarray(rows, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def subset(self, idx) -> "TensorData":
        """The rows at positions `idx`, as data of their own (as stored: nothing converted)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        pick = lambda v: v[idx] if torch.is_tensor(v) else torch.from_numpy(np.asarray(v[idx.numpy()]))  # noqa: E731
        new = object.__new__(TensorData)
        new.inputs = {m: {k: pick(v) for k, v in d.items()} for m, d in self.inputs.items()}
        new.present = {m: pick(v) for m, v in self.present.items()}
        new.targets = {k: pick(v) for k, v in self.targets.items()}
        new.target_mask = {k: pick(v) for k, v in self.target_mask.items()}
        new.rows = self.rows[idx]
        return new

    def batch(self, idx: torch.Tensor) -> Batch:
        inputs = {}
        for m, d in self.inputs.items():
            inputs[m] = {}
            for k, v in d.items():
                x = v[idx] if torch.is_tensor(v) else torch.from_numpy(v[idx.numpy()])
                if x.dtype == torch.uint8:
                    x = x.float().div_(255.0)  # images are cached as uint8
                elif x.dtype == torch.float16:
                    x = x.float()  # audio features are cached as float16
                elif x.dtype == torch.int32:
                    x = x.long()  # token ids are cached as int32
                inputs[m][k] = x
        return Batch(inputs, {m: v[idx] for m, v in self.present.items()},
                     {k: v[idx] for k, v in self.targets.items()},
                     {k: v[idx] for k, v in self.target_mask.items()}, self.rows[idx])

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False, shard: tuple[int, int] = (0, 1)):
        """Batches of `batch_size` rows; with shard=(rank, world) each process of a distributed run
        gets its share (rows rank, rank+world, ...) of every global batch, in the same order
        everywhere (the same `generator` seed), and never an empty share."""
        for idx in batch_indices(len(self), batch_size, shuffle, generator, drop_last, shard):
            yield self.batch(idx)


def batch_indices(n: int, batch_size: int, shuffle: bool, generator, drop_last: bool, shard: tuple[int, int]):
    """Row indices of each batch of one pass (see TensorData.batches)."""
    rank, world = shard
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        if drop_last and len(idx) < batch_size and s > 0:
            break
        if world > 1:
            idx = idx[rank::world] if len(idx) > rank else idx[:1]
        yield idx


class _Order(torch.utils.data.Sampler):
    """The loader's sampler: each item is one batch's row indices, drawn when an epoch starts."""

    def __init__(self, n, batch_size, drop_last, shard):
        self.args = (n, batch_size, drop_last, shard)
        self.shuffle, self.generator = False, None

    def __iter__(self):
        n, batch_size, drop_last, shard = self.args
        return batch_indices(n, batch_size, self.shuffle, self.generator, drop_last, shard)

    def __len__(self):
        n, batch_size, drop_last, _ = self.args
        return n // batch_size if drop_last and n >= batch_size else -(-n // batch_size)


class _Batches(torch.utils.data.Dataset):
    def __init__(self, data: TensorData):
        self.data = data

    def __getitem__(self, idx):
        return self.data.batch(idx)


class Loader:
    """Batches of a TensorData through torch's DataLoader: with `workers` > 0, persistent worker
    processes read and convert the next batches while the model trains; `pin` page-locks them
    for an asynchronous copy to the GPU. The order is drawn in this process from the epoch's
    generator, so it is the same with or without workers."""

    def __init__(self, data: TensorData, batch_size: int, workers: int = 0, pin: bool = False,
                 drop_last: bool = False, shard: tuple[int, int] = (0, 1)):
        self.order = _Order(len(data), batch_size, drop_last, shard)
        extra = dict(persistent_workers=True, prefetch_factor=4) if workers > 0 else {}
        self.loader = torch.utils.data.DataLoader(_Batches(data), batch_size=None, sampler=self.order,
                                                  num_workers=workers, pin_memory=pin, **extra)

    def epoch(self, shuffle: bool = True, generator: torch.Generator | None = None):
        self.order.shuffle, self.order.generator = shuffle, generator
        return iter(self.loader)
