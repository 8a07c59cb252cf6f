"""Read a manifest, check its columns, resolve file paths safely, and split it."""

from __future__ import annotations

import codecs
import contextlib
import csv
import difflib
import io
import math
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from mmfit.config import ConfigError, DataConfig
from mmfit.data.errors import ErrorLog
from mmfit.tasks import task_kind

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}


def parquet_parts(folder: Path) -> list[Path]:
    """The Parquet files directly in a folder, in name order: what `--backend ray` writes (part-00000.parquet
    ...), read as one manifest."""
    return sorted(f for f in Path(folder).iterdir() if f.is_file() and f.suffix.lower() in (".parquet", ".pq"))


def read_manifest(path: Union[str, Path]) -> pd.DataFrame:
    """CSV/TSV/JSONL/Parquet/Excel (.xlsx: its first sheet), or a folder of Parquet parts (`mmfit
    predict/embed --backend ray`'s output, concatenated in name order) -> DataFrame. CSV and Excel
    cells stay strings so '' (missing) and 'NaN' differ; an Excel date cell reads as an ISO date. A
    CSV is read the way it was written (`csv_dialect`: encoding, delimiter, decimal commas), said in
    `df.attrs["read_as"]` where that is not plain UTF-8 with commas."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"manifest not found: {p}")
    if p.is_dir():
        parts = parquet_parts(p)
        if not parts:
            raise ValueError(f"manifest {p}: a folder without Parquet parts in it (a folder is read as the parts "
                             "`--backend ray` writes; a folder of class folders is for `mmfit train FOLDER`)")
        return pd.concat([pd.read_parquet(f) for f in parts], ignore_index=True)
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return read_csv(p)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return pd.read_json(p, lines=suffix != ".json", dtype=False)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(p)
    if suffix in (".xlsx", ".xlsm"):
        return _read_excel(p)
    if suffix == ".xls":
        raise ValueError(f"manifest {p}: the old Excel format (.xls) is not read; save it as .xlsx or .csv")
    raise ValueError(f"manifest {p}: unknown format '{suffix}' (use .csv, .tsv, .jsonl, .parquet or .xlsx)")


DELIMITERS = (",", ";", "\t", "|")
DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")


def csv_dialect(p: Path) -> dict:
    """How a delimited text file was written, from its first megabyte: the encoding (UTF-8, with or
    without the byte-order mark Excel writes; UTF-16, Excel's "Unicode text"; else Windows-1252,
    Excel's "CSV" on Windows; else Latin-1) and the delimiter among , ; tab | (the one that splits the header into more than one
    field and every sampled line into as many; the suffix's own where several do). A file split by
    ';' is the export of a locale that writes decimal commas: 3,5 in it is the number 3.5."""
    with open(p, "rb") as f:
        head = f.read(1 << 20)
        whole = not f.read(1)
    encoding = "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-16" if head.startswith(
        (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8"
    try:
        head.decode(encoding)
    except UnicodeDecodeError as e:
        if whole or e.start < len(head) - 3:  # not merely a character cut at the megabyte's end
            try:
                head.decode("cp1252")
                encoding = "cp1252"
            except UnicodeDecodeError:
                encoding = "latin-1"
    lines = head.decode(encoding, errors="ignore").splitlines()
    lines = [x for x in (lines if whole else lines[:-1])[:50] if x.strip()]
    default = "\t" if p.suffix.lower() == ".tsv" else ","
    fits = []
    for d in DELIMITERS:
        counts = [len(r) for r in csv.reader(io.StringIO("\n".join(lines)), delimiter=d)]
        if counts and counts[0] > 1 and all(c == counts[0] for c in counts):
            fits.append((d == default, counts[0], d))
    sep = max(fits)[2] if fits else default
    return {"encoding": encoding, "sep": sep, "default_sep": default, "decimal_comma": sep == ";"}


def read_csv(p: Path, chunksize: Optional[int] = None):
    """A delimited text file as its dialect says (csv_dialect), cells as strings; a DataFrame, or
    an iterator of DataFrames of `chunksize` rows. A malformed line is an error naming file and line."""
    d = csv_dialect(p)
    note = []
    if d["encoding"] not in ("utf-8", "utf-8-sig"):
        note.append({"cp1252": "Windows-1252", "latin-1": "Latin-1", "utf-16": "UTF-16"}[d["encoding"]]
                    + " text (not UTF-8)")
    if d["sep"] != d["default_sep"]:
        note.append(f"fields split by {'tab' if d['sep'] == chr(9) else repr(d['sep'])}")
    if d["decimal_comma"]:
        note.append("decimal commas read as numbers (3,5 = 3.5)")

    def done(df: pd.DataFrame) -> pd.DataFrame:
        if d["decimal_comma"]:
            for c in df.columns:
                col = df[c].astype(str)
                hit = col.str.fullmatch(DECIMAL_COMMA)
                if hit.any():
                    df[c] = col.where(~hit, col.str.replace(",", ".", regex=False))
        if note:
            df.attrs["read_as"] = ", ".join(note)
        return df

    def malformed(e: Exception) -> ValueError:
        return ValueError(f"manifest {p}: {str(e).strip()} (a value that holds the delimiter {d['sep']!r} must be "
                          "quoted)")

    try:
        read = pd.read_csv(p, dtype=str, keep_default_na=False, sep=d["sep"], encoding=d["encoding"],
                           chunksize=chunksize)
    except pd.errors.ParserError as e:
        raise malformed(e) from None
    if chunksize is None:
        return done(read)

    class Chunks:  # pandas' reader, each chunk read as above; closable like it
        def __iter__(self):
            try:
                for chunk in read:
                    yield done(chunk)
            except pd.errors.ParserError as e:
                raise malformed(e) from None

        def close(self):
            read.close()

    return Chunks()


def _read_excel(p: Path) -> pd.DataFrame:
    """The first sheet, every cell as text as a CSV would hold it: numbers as written ('12', not
    '12.0', where the cell holds a whole number), dates as ISO 8601, empty cells ''. A workbook of
    several sheets says which one was read (`df.attrs["read_as"]`)."""
    import datetime

    with pd.ExcelFile(p, engine="openpyxl") as book:
        sheets = book.sheet_names
        raw = book.parse(sheets[0], dtype=object, keep_default_na=False, na_values=[])

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

    df = pd.DataFrame({str(c): [text(v) for v in raw[c]] for c in raw.columns}, dtype=object)
    if len(sheets) > 1:
        df.attrs["read_as"] = f"its first sheet, {sheets[0]!r} (of {len(sheets)}: {', '.join(map(repr, sheets))})"
    return df


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
        reader = read_csv(p, chunksize=rows)
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
        wanted += [("data.targets", t) for t, tc in cfg.targets.items() if not task_kind(tc.type).paired]  # no column
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


def file_cell(value):
    """A file column's cell as what it holds: the file's bytes (bytes, or the {'bytes', 'path'} struct
    in which a Hugging Face `datasets` Image or Audio column is stored in Parquet), else its path (or
    an empty cell as it was)."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        return value.get("path") or ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return value


def cell_label(value) -> str:
    """How an error names a file cell: its path, or the size of the bytes it holds."""
    value = file_cell(value)
    return f"<{len(value):,} bytes>" if isinstance(value, bytes) else str(value)


WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def file_path(value) -> Path:
    """A file cell as a path: a relative path written on Windows (folders\\by\\backslashes, no '/')
    reads with '/', so a manifest made there works here unchanged."""
    v = str(value).strip()
    if "\\" in v and "/" not in v and not WINDOWS_DRIVE.match(v):
        v = v.replace("\\", "/")
    return Path(v)


class PathResolver:
    """Resolves file cells against the data root and refuses paths that escape it."""

    def __init__(self, root: Path):
        self.root = root.resolve()

    def resolve(self, value: str, folders: bool = False) -> tuple[Optional[Path], Optional[str]]:
        """-> (path, None) or (None, reason). `folders`: a folder is a value too (an image column's
        DICOM series)."""
        if WINDOWS_DRIVE.match(str(value).strip()):
            return None, (f"path '{value}' is a Windows drive path: write the paths relative to the folder that "
                          "holds the files, and give that folder as the data root (data.root, or --root)")
        p = file_path(value)
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
    assignment = stratified_assign(idx, labels, n_val, n_test, rng)
    for i, s in assignment.items():
        out.iloc[i] = s
    return out


def stratified_assign(idx, labels, n_val, n_test, rng) -> dict[int, str]:
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
