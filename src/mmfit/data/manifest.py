"""Read a manifest, check its columns, resolve file paths safely, and split it."""

from __future__ import annotations

import contextlib
import difflib
import math
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from mmfit.config import ConfigError, DataConfig
from mmfit.data.errors import ErrorLog

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}


def read_manifest(path: Union[str, Path]) -> pd.DataFrame:
    """CSV/TSV/JSONL/Parquet/Excel (.xlsx: its first sheet) -> DataFrame. CSV and Excel cells stay
    strings so '' (missing) and 'NaN' differ; an Excel date cell reads as an ISO date."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"manifest not found: {p}")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return pd.read_csv(p, dtype=str, keep_default_na=False, sep="\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".ndjson", ".json"):
        return pd.read_json(p, lines=suffix != ".json", dtype=False)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(p)
    if suffix in (".xlsx", ".xlsm"):
        return _read_excel(p)
    if suffix == ".xls":
        raise ValueError(f"manifest {p}: the old Excel format (.xls) is not read; save it as .xlsx or .csv")
    raise ValueError(f"manifest {p}: unknown format '{suffix}' (use .csv, .tsv, .jsonl, .parquet or .xlsx)")


def _read_excel(p: Path) -> pd.DataFrame:
    """The first sheet, every cell as text as a CSV would hold it: numbers as written ('12', not
    '12.0', where the cell holds a whole number), dates as ISO 8601, empty cells ''."""
    import datetime

    raw = pd.read_excel(p, sheet_name=0, dtype=object, keep_default_na=False, na_values=[], engine="openpyxl")

    def text(v) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        if isinstance(v, (datetime.datetime, pd.Timestamp)):
            return v.isoformat(sep=" ") if (v.hour, v.minute, v.second, v.microsecond) != (0, 0, 0, 0) else \
                v.date().isoformat()
        if isinstance(v, datetime.date):
            return v.isoformat()
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return pd.DataFrame({str(c): [text(v) for v in raw[c]] for c in raw.columns}, dtype=object)


def manifest_chunks(df: Optional[pd.DataFrame], path, rows: int):
    """The manifest in consecutive DataFrames of at most `rows` rows (index from 0 in each):
    slices of `df`, or read from `path` chunk by chunk (CSV/TSV and JSON lines stream; a JSON
    array is read whole). Always at least one, possibly empty, so its columns can be checked."""
    if df is not None:
        df = df.reset_index(drop=True)
        for s in range(0, max(len(df), 1), rows):
            yield df.iloc[s : s + rows].reset_index(drop=True)
        return
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"manifest not found: {p}")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        reader = pd.read_csv(p, dtype=str, keep_default_na=False, sep="\t" if suffix == ".tsv" else ",",
                             chunksize=rows)
    elif suffix in (".jsonl", ".ndjson"):
        reader = pd.read_json(p, lines=True, dtype=False, chunksize=rows)
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        reader = (b.to_pandas() for b in pq.ParquetFile(p).iter_batches(batch_size=rows))
    else:
        reader = [read_manifest(p)]
    n = 0
    with contextlib.closing(reader) if hasattr(reader, "close") else contextlib.nullcontext():
        for chunk in reader:
            n += 1
            yield chunk.reset_index(drop=True)
    if n == 0:  # a header without rows
        yield read_manifest(p)


def is_missing(value, na_values: list[str]) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float) and math.isnan(value):
        # In a DataFrame NaN is pandas' own missing marker. CSV cells are read as strings,
        # so a literal "NaN" there is not missing but a bad number (see tabular.py).
        return True
    if isinstance(value, str) and value.strip() in na_values:
        return True
    return False


def check_columns(df: pd.DataFrame, cfg: DataConfig, need_targets: bool) -> None:
    """Every configured column must exist in the manifest; a typo gets a suggestion."""
    have = [str(c) for c in df.columns]
    wanted = [("data.columns", c) for c, cc in cfg.columns.items() if cc.source is None]
    wanted += [(f"data.columns.{c}.source", cc.source) for c, cc in cfg.columns.items()
               if cc.source is not None and cc.source not in cfg.columns]  # a source that is no input itself
    if need_targets:
        wanted += [("data.targets", t) for t, tc in cfg.targets.items() if tc.type != "matching"]  # no column
    for c, cc in cfg.columns.items():  # a manifest (need_targets): its own column would be read in silence
        if cc.source is not None and c in have and need_targets:
            raise ConfigError(f"data.columns.{c}.source: '{c}' reads the column '{cc.source}', but the manifest has a "
                              f"column '{c}' of its own; rename one of them")
    for section, col in wanted:
        if col not in have:
            close = difflib.get_close_matches(col, have, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{section}.{col}: column '{col}' is not in the manifest{hint} (columns: {', '.join(have)})"
            )


def with_sources(df: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """The columns that read another column (`source`: a video's sound track reads the video's paths)
    filled from it where the frame does not hold them yet (robustness pins them before corrupting the
    source); the manifest itself is not changed."""
    derived = {c: cc.source for c, cc in cfg.columns.items()
               if cc.source is not None and cc.source in df.columns and c not in df.columns}
    return df.assign(**{c: df[src] for c, src in derived.items()}) if derived else df


class PathResolver:
    """Resolves file cells against the data root and refuses paths that escape it."""

    def __init__(self, root: Path):
        self.root = root.resolve()

    def resolve(self, value: str, folders: bool = False) -> tuple[Optional[Path], Optional[str]]:
        """-> (path, None) or (None, reason). `folders`: a folder is a value too (an image column's
        DICOM series)."""
        p = Path(str(value).strip())
        full = (p if p.is_absolute() else self.root / p).resolve()
        if not full.is_relative_to(self.root):
            return None, (f"path '{value}' is outside the data root {self.root} (set data.root, or --root, "
                          "to a folder that holds it)")
        if not full.exists():
            return None, f"file not found: {full}"
        if not full.is_file() and not (folders and full.is_dir()):
            return None, f"not a file: {full}"
        return full, None


def data_root(cfg: DataConfig) -> Path:
    if cfg.root:
        return Path(cfg.root)
    if cfg.manifest:
        return Path(cfg.manifest).resolve().parent
    return Path.cwd()


def assign_splits(
    df: pd.DataFrame, cfg: DataConfig, keep: np.ndarray, errors: ErrorLog, stratify_labels: Optional[pd.Series]
) -> pd.Series:
    """Return 'train'/'val'/'test' per row (rows not in `keep` get ''); from the split column or seeded."""
    out = pd.Series([""] * len(df), index=df.index, dtype=object)
    col = cfg.split.column
    if col in df.columns and col not in cfg.columns and col not in cfg.targets:
        for i, v in zip(range(len(df)), df[col].tolist()):
            if not keep[i]:
                continue
            name = SPLIT_NAMES.get(str(v).strip().lower())
            if name is None:
                errors.add(i, col, f"split value {v!r} is not one of train/val/test")
            else:
                out.iloc[i] = name
        return out
    idx = np.flatnonzero(keep)
    rng = np.random.default_rng(cfg.split.seed)
    n_test = int(round(cfg.split.test * len(idx)))
    n_val = int(round(cfg.split.val * len(idx)))
    if cfg.split.group_column:
        groups = df[cfg.split.group_column].astype(str).to_numpy()[idx]
        uniq = np.array(sorted(set(groups)))
        rng.shuffle(uniq)
        g_test, g_val = set(), set()
        count = 0
        for g in uniq:  # fill test, then val, whole groups at a time
            size = int((groups == g).sum())
            if count < n_test:
                g_test.add(g)
            elif count < n_test + n_val:
                g_val.add(g)
            count += size
        for j, i in enumerate(idx):
            out.iloc[i] = "test" if groups[j] in g_test else "val" if groups[j] in g_val else "train"
        return out
    labels = None
    if cfg.split.stratify and stratify_labels is not None:
        labels = stratify_labels.to_numpy()[idx].astype(str)
    assignment = _stratified_assign(idx, labels, n_val, n_test, rng)
    for i, s in assignment.items():
        out.iloc[i] = s
    return out


def _stratified_assign(idx, labels, n_val, n_test, rng) -> dict[int, str]:
    """Per class, deal test/val/train in the global proportions (every class keeps train rows)."""
    if labels is None:
        labels = np.zeros(len(idx), dtype=str)
    total = len(idx)
    f_test, f_val = n_test / max(total, 1), n_val / max(total, 1)
    out: dict[int, str] = {}
    for lab in sorted(set(labels)):
        members = idx[labels == lab].copy()
        rng.shuffle(members)
        k = len(members)
        kt = int(round(f_test * k))
        kv = int(round(f_val * k))
        if k - kt - kv < 1:  # never leave a class without a training row
            kt, kv = (max(0, min(kt, k - 1)), 0) if k > 1 else (0, 0)
        for j, i in enumerate(members):
            out[int(i)] = "test" if j < kt else "val" if j < kt + kv else "train"
    return out
