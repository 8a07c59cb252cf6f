"""Batch prediction and embedding on a Ray cluster: `mmfit predict RUN DATA --backend ray`, and
`mmfit embed RUN DATA --backend ray` (each row's encoded columns replaced by their embeddings,
Predictor.embeddings: what a later run trains on without decoding the files again).

The manifest's shards are read by Ray tasks (engine.py); a pool of actors, each holding the run's
Predictor (torch or ONNX), predicts batches of rows exactly as `mmfit predict` does on one machine
(the same Predictor.predict, the same --on-error policy); the predictions are written as Parquet
shards under OUTPUT, with `shard` and `row` naming each row's source, and every row or cell that
could not be used is listed in OUTPUT/skipped.csv (shard, manifest file, row, column, file, reason):
none is lost silently. With --on-error raise (the default) the first bad row stops the job with its
shard, row, column and file named.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Union

import pandas as pd

from mmfit.cluster.engine import ROW, SHARD, connect, data_error, manifest_dataset, manifest_shards

ERRORS, PREDICTED = "_errors", "_predicted"


class _Predict:
    """A Ray actor's model: loaded once, then one batch of manifest rows at a time, through
    Predictor.predict or (`what`: embeddings) Predictor.embeddings."""

    def __init__(self, run: str, roots: list[str], on_error: str, device: str, backend: str, threads: int,
                 what: str = "predict"):
        import torch

        from mmfit.deploy.predictor import Predictor

        if threads:
            torch.set_num_threads(threads)
        self.pred = Predictor.load(run, device=device, backend=backend)
        self.roots, self.on_error, self.what = roots, on_error, what

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from mmfit.data.errors import DataError

        parts = []
        for shard, rows in batch.groupby(SHARD, sort=True):
            meta = rows[[SHARD, ROW]].reset_index(drop=True)
            df = rows.drop(columns=[SHARD, ROW]).reset_index(drop=True)
            try:
                out = getattr(self.pred, self.what)(df, root=self.roots[int(shard)], on_error=self.on_error)
            except DataError as e:  # named by the manifest's shard and row, not the batch's
                raise DataError([type(x)(int(meta[ROW][x.row]), x.column, x.reason, x.file) for x in e.errors],
                                source=f"{e.source} (shard {int(shard)})", hint=e.hint) from None
            errors: dict[int, list] = {}
            for x in self.pred.last_errors:
                errors.setdefault(x.row, []).append({"column": x.column, "file": x.file, "reason": x.reason})
            done = pd.DataFrame({PREDICTED: True}, index=out["row"].to_numpy()).join(out.set_index("row"))
            left = sorted(set(errors) - set(done.index))
            every = pd.concat([done, pd.DataFrame({PREDICTED: False}, index=left)]) if left else done
            columns = (self.pred.output_columns() if self.what == "predict"
                       else self.pred.embedding_columns(list(df.columns)))
            every = every.sort_index().reindex(columns=[PREDICTED, *columns])
            every.insert(0, ERRORS, [json.dumps(errors[i]) if i in errors else "" for i in every.index])
            every.insert(0, ROW, meta[ROW].to_numpy()[every.index])
            every.insert(0, SHARD, int(shard))
            parts.append(every.reset_index(drop=True))
        return pd.concat(parts, ignore_index=True)


def predict_on_ray(run: Union[str, Path], data: str, output: Union[str, Path], on_error: str = "raise",
                   root: Optional[Union[str, Path]] = None, device: str = "auto", backend: str = "torch",
                   workers: Optional[int] = None, batch_size: int = 256, address: Optional[str] = None,
                   num_cpus: Optional[int] = None, log=print, what: str = "predict") -> dict:
    """Predict every row of the manifest `data` (file, folder or glob of shards; local or URL) on the
    Ray cluster at `address` (default: $RAY_ADDRESS, else a local one) with `workers` actors (default:
    one per CPU of the cluster). File paths resolve against `root`, else each shard's own folder.
    Writes OUTPUT/*.parquet (predictions; with `what="embeddings"`, the rows with their encoded
    columns as embeddings) and OUTPUT/skipped.csv (where any row or cell was not used).
    -> {"rows", "predicted", "skipped", "seconds", "rows_per_s", "workers", "output"}."""
    from mmfit.run.store import Run

    Run(run).config()  # a clear error for a path that is not a run, before a cluster starts
    out_dir = Path(output)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} already exists and is not empty; choose another --output")
    t0 = time.time()
    ray = connect(address, num_cpus)
    shards = manifest_shards(str(data))
    roots = [str(root) if root else (str(Path(s).resolve().parent) if "://" not in s else "") for s in shards]
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = int(ray.cluster_resources().get("GPU", 0))
    gpu = device.startswith("cuda") or (device == "auto" and gpus > 0)
    workers = workers or (gpus if gpu else max(1, cpus))
    threads = 0 if gpu else max(1, cpus // workers)
    ds = manifest_dataset(ray, shards).map_batches(
        _Predict, batch_size=batch_size, batch_format="pandas", concurrency=workers,
        fn_constructor_args=(str(Path(run).resolve()), roots, on_error, "cuda" if gpu else "cpu", backend, threads,
                             what),
        num_cpus=0 if gpu else threads, num_gpus=1 if gpu else 0)
    try:
        table = ds.to_pandas()  # one pass over the cluster; the driver gathers only the outputs
    except Exception as e:  # Ray wraps the worker's error: give the user the DataError's own words
        found = data_error(e)
        if found is not None:
            raise found from None
        raise
    table = table.sort_values([SHARD, ROW], kind="stable").reset_index(drop=True)
    return _write(table, shards, out_dir, workers, time.time() - t0, log,
                  "predicted" if what == "predict" else "embedded")


def _write(table: pd.DataFrame, shards: list[str], out_dir: Path, workers: int, seconds: float, log,
           done_what: str = "predicted") -> dict:
    """OUTPUT/part-NNNNN.parquet (predictions, `shard` and `row` first; a part per manifest shard)
    and OUTPUT/skipped.csv; written beside OUTPUT and renamed, so a failed job leaves no half output."""
    import shutil

    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    done = table[table[PREDICTED].astype(bool)].drop(columns=[PREDICTED, ERRORS]).rename(columns={SHARD: "shard", ROW: "row"})
    for s, part in done.groupby("shard", sort=True):
        part = part.reset_index(drop=True)
        for c in part.columns:  # Ray hands lists (embeddings) back as Arrow lists: plain ones, as the local path
            if isinstance(part[c].dtype, pd.ArrowDtype):
                part[c] = pd.Series(part[c].tolist(), dtype=object)
        part.to_parquet(tmp / f"part-{int(s):05d}.parquet", index=False)
    listed = [{"shard": int(r[SHARD]), "manifest": shards[int(r[SHARD])], "row": int(r[ROW]), **e,
               "predicted": bool(r[PREDICTED])}
              for _, r in table[table[ERRORS] != ""].iterrows() for e in json.loads(r[ERRORS])]
    if listed:
        pd.DataFrame(listed).to_csv(tmp / "skipped.csv", index=False)
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked before the job)
    tmp.rename(out_dir)
    n, predicted = len(table), int(table[PREDICTED].astype(bool).sum())
    info = {"rows": n, "predicted": predicted, "skipped": n - predicted, "seconds": round(seconds, 2),
            "rows_per_s": round(n / max(seconds, 1e-9), 1), "workers": workers, "output": str(out_dir)}
    note = f"; {len(listed)} problem(s) listed in {out_dir / 'skipped.csv'}" if listed else ""
    log(f"{done_what} {predicted} of {n} rows on Ray ({workers} worker{'s' * (workers != 1)}, {info['seconds']} s)"
        f"{note}: {out_dir}")
    return info
