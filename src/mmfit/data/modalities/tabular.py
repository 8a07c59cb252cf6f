"""Numbers and categories: one 'tabular' modality, one token per column (missing -> masked token)."""

from __future__ import annotations

import math

import numpy as np

from mmfit.data.errors import ErrorLog

UNK = "<unk>"


def parse_number(value) -> tuple[float | None, str | None]:
    """-> (number, None) or (None, reason). Missing cells are handled before this is called."""
    if isinstance(value, bool):
        return None, f"{value!r} is not a number"
    try:
        x = float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
    except ValueError:
        return None, f"{value!r} is not a number"
    if not math.isfinite(x):
        return None, f"{value!r} is not a finite number (leave the cell empty for a missing value)"
    return x, None


class TabularProcessor:
    kind = "tabular"

    def __init__(self, numeric: list[str], categorical: list[str]):
        self.numeric = numeric
        self.categorical = categorical
        self.stats: dict[str, dict] = {}
        self.vocab: dict[str, list[str]] = {}

    @property
    def n_features(self) -> int:
        return len(self.numeric) + len(self.categorical)

    def parse(self, df, rows: np.ndarray, missing, errors: ErrorLog) -> dict:
        """Validate and parse cells: numeric -> float (nan = missing), categorical -> str|None."""
        values = np.full((len(df), len(self.numeric)), np.nan, dtype=np.float64)
        for j, col in enumerate(self.numeric):
            for i, v in zip(rows, df[col].to_numpy()[rows]):
                if missing(v):
                    continue
                x, reason = parse_number(v)
                if reason:
                    errors.add(i, col, reason)
                else:
                    values[i, j] = x
        cats = {}
        for col in self.categorical:
            cats[col] = [None if missing(v) else str(v).strip() for v in df[col].tolist()]
        return {"values": values, "cats": cats}

    def fit(self, parsed: dict, train_rows: np.ndarray) -> None:
        for j, col in enumerate(self.numeric):
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
        out_vals = np.zeros((n, len(self.numeric)), np.float32)
        mask = np.zeros((n, self.n_features), bool)
        for j, col in enumerate(self.numeric):
            ok = ~np.isnan(vals[:, j])
            s = self.stats[col]
            out_vals[ok, j] = ((vals[ok, j] - s["mean"]) / s["std"]).astype(np.float32)
            mask[:, j] = ok
        cats = np.zeros((n, len(self.categorical)), np.int64)
        for k, col in enumerate(self.categorical):
            index = {c: i for i, c in enumerate(self.vocab[col])}
            for i, v in enumerate(parsed["cats"][col]):
                if v is not None:
                    cats[i, k] = index.get(v, 0)  # unseen category -> <unk>, the usual convention
                    mask[i, len(self.numeric) + k] = True
        return {"values": out_vals, "categories": cats, "feature_mask": mask}

    def state(self) -> dict:
        return {"kind": "tabular", "numeric": self.numeric, "categorical": self.categorical,
                "stats": self.stats, "vocab": self.vocab}

    @classmethod
    def from_state(cls, s: dict) -> "TabularProcessor":
        p = cls(s["numeric"], s["categorical"])
        p.stats, p.vocab = s["stats"], s["vocab"]
        return p
