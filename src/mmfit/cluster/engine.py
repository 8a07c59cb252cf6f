"""Connecting to Ray, and a manifest as a Ray Dataset.

A manifest may be one file or many (a folder or glob of CSV/TSV/JSONL/Parquet shards, local or any
fsspec URL). Each shard is read by a Ray task, not by the driver, and each of its rows keeps where it
came from (`_shard`: the shard's number in the sorted list, `_row`: its position in that shard), so a
row that cannot be used is named, and results can be matched to their rows, whatever the order the
cluster returns them in.
"""

from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import Optional

import pandas as pd

MANIFEST_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json", ".parquet", ".pq")
SHARD, ROW = "_shard", "_row"


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None):
    """The `ray` module, connected: to `address` (or $RAY_ADDRESS: a running cluster, 'auto' for the
    one on this machine), else to a local cluster started here (with `num_cpus`)."""
    try:
        import ray
    except ImportError:
        raise ImportError("--backend ray needs Ray: pip install 'mmfit[ray]'") from None
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs = {} if address else {"num_cpus": num_cpus, "include_dashboard": False}
        ray.init(address=address, log_to_driver=False, configure_logging=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    if hasattr(ctx, "raise_original_map_exception"):  # a worker's DataError reaches the driver as itself
        ctx.raise_original_map_exception = True
    return ray


def data_error(error: BaseException):
    """The DataError a worker raised, from inside the errors Ray wraps it in (its task error, Ray
    Data's user-code error), or None: what the user is shown instead of Ray's traceback."""
    from mmfit.data.errors import DataError

    seen, todo = set(), [error]
    while todo:
        x = todo.pop(0)
        if isinstance(x, DataError) and type(x).__module__.startswith("mmfit"):  # not Ray's RayTaskError(DataError)
            return x
        if x is not None and id(x) not in seen:
            seen.add(id(x))
            todo += [getattr(x, "cause", None), x.__cause__, x.__context__]
    return None


def manifest_shards(source: str) -> list[str]:
    """The shards of a manifest: a file, a folder of them or a glob (sorted), local or fsspec URL."""
    if "://" in source:
        import fsspec

        fs, path = fsspec.core.url_to_fs(source)
        proto = source.split("://", 1)[0]
        if fs.isdir(path):
            found = [p for p in fs.ls(path, detail=False) if p.lower().endswith(MANIFEST_SUFFIXES)]
        else:
            found = fs.glob(path) if any(c in path for c in "*?[") else [path]
        files = sorted(f if "://" in f else f"{proto}://{f}" for f in found)
    else:
        p = Path(source)
        if p.is_dir():
            files = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in MANIFEST_SUFFIXES)
        else:
            files = sorted(glob.glob(source)) if any(c in source for c in "*?[") else [source]
    if not files:
        raise FileNotFoundError(f"manifest {source}: no CSV/TSV/JSONL/Parquet file there")
    return files


def read_shard(path: str) -> pd.DataFrame:
    """One shard as mmfit reads a manifest (cells of a CSV stay strings), from a path or a URL."""
    from mmfit.data.manifest import read_manifest

    if "://" not in path:
        return read_manifest(path)
    import fsspec

    with fsspec.open(path, "rb") as f, tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path.split("://", 1)[1]).name
        local.write_bytes(f.read())
        return read_manifest(local)


def _read(batch: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for shard, path in zip(batch["shard"], batch["path"]):
        df = read_shard(path).reset_index(drop=True)
        df.insert(0, ROW, range(len(df)))
        df.insert(0, SHARD, int(shard))
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def manifest_dataset(ray, shards: list[str]):
    """The rows of the shards as a Ray Dataset (each shard read by a task, rows tagged _shard/_row)."""
    items = [{"shard": i, "path": p} for i, p in enumerate(shards)]
    # reading a shard is light: it claims no CPU, so that model actors holding every CPU never wait
    # on a read that cannot be scheduled
    return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _read, batch_size=1, batch_format="pandas", num_cpus=0)


class RayPool:
    """An executor over a Ray cluster with the `map` / `shutdown` of concurrent.futures' pools: each
    call of `fn` a Ray task (one CPU), results in the order of the arguments. The preprocessing's
    block decoder runs in it unchanged (`mmfit preprocess --backend ray`), writing its shards into
    the cache folder, which must therefore be one folder every machine of the cluster sees."""

    def __init__(self, ray):
        self.ray = ray
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def map(self, fn, *iterables):
        task = self.ray.remote(num_cpus=1, max_retries=2)(fn)
        refs = [task.remote(*args) for args in zip(*iterables)]
        return iter(self.ray.get(refs))

    def shutdown(self, wait: bool = True) -> None:
        pass


class _Gate:
    """A Ray actor counting who has arrived (RayBarrier's state)."""

    def __init__(self):
        self.n = 0

    def arrive(self) -> int:
        self.n += 1
        return self.n

    def count(self) -> int:
        return self.n


class RayBarrier:
    """`wait()` returns once `parties` Ray tasks have called it (or after `timeout` seconds): the tune
    workers start taking trials together, as the local ones do with multiprocessing's Barrier."""

    def __init__(self, ray, parties: int):
        self.gate = ray.remote(num_cpus=0)(_Gate).remote()
        self.parties = parties

    def wait(self, timeout: float = 300) -> None:
        import time

        import ray

        ray.get(self.gate.arrive.remote())
        t0 = time.time()
        while ray.get(self.gate.count.remote()) < self.parties and time.time() - t0 < timeout:
            time.sleep(0.05)
