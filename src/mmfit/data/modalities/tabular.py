"""Numbers, categories, dates and vectors: one 'tabular' modality, one token per feature (missing ->
masked token). A date column becomes numeric features (DATE_PARTS): the days elapsed, and where it
falls in the year, the week and the day as points on a circle (sin, cos), so that December is next to
January and Sunday next to Monday. A vector column holds a list of numbers in each cell (features or
an embedding computed elsewhere: a JSON list, a Parquet array, or text written as one, "[0.1, 0.2]"):
its numbers are features `<column>[i]`, each standardised, and the encoder reads them as one token
(a few hundred numbers would otherwise be a few hundred tokens)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from mmfit.data.errors import ErrorLog

UNK = "<unk>"
DATE_PARTS = ("days", "year_sin", "year_cos", "week_sin", "week_cos", "day_sin", "day_cos")
EPOCH = pd.Timestamp("2000-01-01", tz="UTC")
HAS_YEAR = re.compile(r"\d{4}|\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2}\b")  # a parser would take "12" as this month's 12th


SLASHED = re.compile(r"^\s*(\d{1,2})[-/.](\d{1,2})[-/.]\d{2,4}\b")  # 10/06/2024: day or month first?


def day_first(values) -> bool:
    """Whether a column's slashed dates (10/06/2024) put the day first: some first number cannot be
    a month and no second one can be a day beyond 12. Otherwise month first, as pandas reads them."""
    pairs = [(int(m.group(1)), int(m.group(2))) for v in values if isinstance(v, str) and (m := SLASHED.match(v))]
    return any(a > 12 for a, _ in pairs) and not any(b > 12 for _, b in pairs)


def parse_date(value, dayfirst: bool = False) -> tuple[pd.Timestamp | None, str | None]:
    """-> (a UTC time stamp, None) or (None, reason). A time without a zone is read as UTC; slashed
    dates (10/06/2024) read day first where `dayfirst` (the column's `day_first`), else month first;
    ISO 8601 (2024-06-10) is read as written either way."""
    if isinstance(value, bool) or isinstance(value, (int, float, np.integer, np.floating)) or (
            isinstance(value, str) and not HAS_YEAR.search(value)):
        return None, f"{value!r} is not a date with a year (e.g. 2024-06-10 or 2024-06-10 14:30)"
    try:
        if isinstance(value, str):
            text = value.strip()
            t = pd.to_datetime(text, format="mixed", dayfirst=dayfirst and bool(SLASHED.match(text)))
        else:  # a datetime, date or numpy datetime64 (a DataFrame's own)
            t = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime):
        return None, f"{value!r} is not a date (e.g. 2024-06-10 or 2024-06-10 14:30)"
    if t is pd.NaT:
        return None, f"{value!r} is not a date"
    return (t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC")), None


def date_features(t: pd.Timestamp) -> list[float]:
    """The DATE_PARTS of one time stamp."""
    days = (t - EPOCH).total_seconds() / 86400
    year = (t.dayofyear - 1 + (t.hour * 3600 + t.minute * 60 + t.second) / 86400) / (366 if t.is_leap_year else 365)
    week = (t.dayofweek + (days % 1)) / 7
    day = days % 1
    return [days] + [f(2 * math.pi * x) for x in (year, week, day) for f in (math.sin, math.cos)]


# how spreadsheets write numbers: a currency sign, thousands grouped by commas, a percent sign
SPREADSHEET_NUMBER = re.compile(r"^([+-]?)\s*[$€£¥]?\s*(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?\s*(%|€)?$")


def parse_number(value) -> tuple[float | None, str | None]:
    """-> (number, None) or (None, reason). Missing cells are handled before this is called. Besides
    what float() reads, numbers as spreadsheets show them: $1,200.50 -> 1200.5, 45% -> 45, 12 € -> 12
    (a percentage keeps the number written, as the sheet shows it)."""
    if isinstance(value, bool):
        return None, f"{value!r} is not a number"
    try:
        x = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
    except ValueError:
        m = SPREADSHEET_NUMBER.match(str(value).strip())
        if not m or not (m.group(2) or m.group(4)):
            return None, f"{value!r} is not a number"
        x = float(m.group(1) + (m.group(2) or "0").replace(",", "") + (m.group(4) or ""))
    if not math.isfinite(x):
        return None, f"{value!r} is not a finite number (leave the cell empty for a missing value)"
    return x, None


VECTOR_TEXT = re.compile(r"^\s*\[(.*)\]\s*$", re.S)


def parse_vector(value) -> tuple[np.ndarray | None, str | None]:
    """A cell of a vector column -> (its numbers, None) or (None, reason): a list or array (JSONL,
    Parquet, a DataFrame), or text written as a list, "[0.1, 0.2, 0.3]" (commas, or spaces as numpy
    prints arrays). An empty list is a missing value: (empty array, None)."""
    if isinstance(value, str):
        m = VECTOR_TEXT.match(value)
        if not m:
            return None, f"{value[:40]!r} is not a list of numbers (e.g. [0.1, 0.2, 0.3])"
        parts: list = [p for p in re.split(r"[,\s]+", m.group(1).strip()) if p]
    elif isinstance(value, (list, tuple, np.ndarray)):
        parts = list(value)
    else:
        return None, f"{value!r} is not a list of numbers (e.g. [0.1, 0.2, 0.3])"
    out = []
    for p in parts:
        x = None if isinstance(p, (bool, list, tuple, dict, np.ndarray)) else parse_number(p)[0]
        if x is None:
            return None, f"{str(p)[:20]!r} in {str(value)[:40]!r} is not a (finite) number"
        out.append(x)
    return np.asarray(out, np.float64), None


class TabularProcessor:
    kind = "tabular"

    def __init__(self, numeric: list[str], categorical: list[str], dates: list[str] | None = None,
                 vectors: list[str] | None = None):
        self.numeric = numeric
        self.categorical = categorical
        self.dates = list(dates or [])
        self.vectors = list(vectors or [])
        self.dayfirst: dict[str, bool] = {}  # per date column, decided from its values when first read
        self.sizes: dict[str, int] = {}  # per vector column, its lists' length: the most common when first read
        self.stats: dict[str, dict] = {}
        self.vocab: dict[str, list[str]] = {}

    @property
    def number_features(self) -> list[str]:
        """The names of the numeric features, in the order of the `values` tensor: the numeric
        columns, then each date column's DATE_PARTS (`<column>.<part>`), then each vector column's
        numbers (`<column>[i]`)."""
        return (self.numeric + [f"{c}.{p}" for c in self.dates for p in DATE_PARTS]
                + [f"{c}[{i}]" for c in self.vectors for i in range(self.sizes[c])])

    @property
    def vector_sizes(self) -> list[int]:
        """The vector columns' lengths, in order: their numbers close the `values` tensor."""
        return [self.sizes[c] for c in self.vectors]

    def by_column(self, scores) -> dict[str, float]:
        """Per-number-feature scores (an attribution) summed per manifest column: a date's parts as one,
        a vector's numbers as one."""
        out: dict[str, float] = {}
        for name, v in zip(self.number_features, scores):
            col = name if name in self.numeric else (name.rsplit("[", 1)[0] if name.endswith("]")
                                                      else name.rsplit(".", 1)[0])
            out[col] = out.get(col, 0.0) + float(v)
        return out

    @property
    def n_features(self) -> int:
        return len(self.number_features) + len(self.categorical)

    def parse(self, df, rows: np.ndarray, missing, errors: ErrorLog) -> dict:
        """Validate and parse cells: numeric -> float, a date -> its DATE_PARTS, a vector -> its numbers
        (nan = missing), categorical -> str|None."""
        vectors = {}
        for col in self.vectors:
            got = {}
            for i, v in zip(rows, df[col].to_numpy(dtype=object)[rows]):
                if missing(v):
                    continue
                x, reason = parse_vector(v)
                if reason:
                    errors.add(i, col, reason)
                elif len(x):
                    got[i] = x
            if col not in self.sizes:
                lengths = [len(x) for x in got.values()]
                self.sizes[col] = max(set(lengths), key=lengths.count) if lengths else 1
            vectors[col] = got
        values = np.full((len(df), len(self.number_features)), np.nan, dtype=np.float64)
        for j, col in enumerate(self.numeric):
            for i, v in zip(rows, df[col].to_numpy()[rows]):
                if missing(v):
                    continue
                x, reason = parse_number(v)
                if reason:
                    errors.add(i, col, reason)
                else:
                    values[i, j] = x
        for k, col in enumerate(self.dates):
            j = len(self.numeric) + k * len(DATE_PARTS)
            cells = df[col].to_numpy(dtype=object)
            if col not in self.dayfirst:
                self.dayfirst[col] = day_first(cells[rows])
            for i, v in zip(rows, cells[rows]):
                if missing(v):
                    continue
                t, reason = parse_date(v, self.dayfirst[col])
                if reason:
                    errors.add(i, col, reason)
                else:
                    values[i, j:j + len(DATE_PARTS)] = date_features(t)
        j = len(self.numeric) + len(self.dates) * len(DATE_PARTS)
        for col in self.vectors:
            n = self.sizes[col]
            for i, x in vectors[col].items():
                if len(x) != n:
                    errors.add(i, col, f"holds {len(x)} numbers; the column's lists hold {n}")
                else:
                    values[i, j:j + n] = x
            j += n
        cats = {}
        for col in self.categorical:
            cats[col] = [None if missing(v) else str(v).strip() for v in df[col].tolist()]
        return {"values": values, "cats": cats}

    def fit(self, parsed: dict, train_rows: np.ndarray) -> None:
        for j, col in enumerate(self.number_features):
            x = parsed["values"][train_rows, j]
            x = x[~np.isnan(x)]
            mean = float(x.mean()) if len(x) else 0.0
            std = float(x.std()) if len(x) > 1 else 1.0
            self.stats[col] = {"mean": mean, "std": std if std > 1e-12 else 1.0}
        for col in self.categorical:
            seen = sorted({parsed["cats"][col][i] for i in train_rows} - {None})
            self.vocab[col] = [UNK] + seen

    def encode(self, parsed: dict) -> dict[str, np.ndarray]:
        vals = parsed["values"]
        n = vals.shape[0]
        k = len(self.number_features)
        out_vals = np.zeros((n, k), np.float32)
        mask = np.zeros((n, self.n_features), bool)
        for j, col in enumerate(self.number_features):
            ok = ~np.isnan(vals[:, j])
            s = self.stats[col]
            out_vals[ok, j] = ((vals[ok, j] - s["mean"]) / s["std"]).astype(np.float32)
            mask[:, j] = ok
        cats = np.zeros((n, len(self.categorical)), np.int64)
        for c, col in enumerate(self.categorical):
            index = {v: i for i, v in enumerate(self.vocab[col])}
            for i, v in enumerate(parsed["cats"][col]):
                if v is not None:
                    cats[i, c] = index.get(v, 0)  # unseen category -> <unk>, the usual convention
                    mask[i, k + c] = True
        return {"values": out_vals, "categories": cats, "feature_mask": mask}

    def state(self) -> dict:
        return {"kind": "tabular", "numeric": self.numeric, "categorical": self.categorical, "dates": self.dates,
                "vectors": self.vectors, "sizes": self.sizes, "dayfirst": self.dayfirst, "stats": self.stats,
                "vocab": self.vocab}

    @classmethod
    def from_state(cls, s: dict) -> "TabularProcessor":
        p = cls(s["numeric"], s["categorical"], s.get("dates", []), s.get("vectors", []))
        p.stats, p.vocab, p.dayfirst, p.sizes = s["stats"], s["vocab"], s.get("dayfirst", {}), s.get("sizes", {})
        return p
