"""Targets: classification, multi-label and regression; parsed, fitted on train, encoded. A
matching task has no column: its target is whether a row has both sides (data/prepare.py). A
generation task's target is a text: token ids of a WordPiece vocabulary learned from the training
texts, [CLS] first (the decoder's start) and [SEP] last (its end); with `decoder: ctc`, characters:
id 0 is CTC's blank (and the padding), 1 a character never seen in training, then the training
texts' characters."""

from __future__ import annotations

from typing import Optional

import numpy as np

from mmfit.config import TargetConfig, TextConfig
from mmfit.data.errors import ErrorLog
from mmfit.data.modalities.tabular import parse_number
from mmfit.data.modalities.text import TextProcessor
from mmfit.tasks import task_kind

CTC_UNSEEN, CTC_FIRST = 1, 2  # CTC ids: 0 blank, 1 a character unseen in training, 2.. the characters


class TargetProcessor:
    def __init__(self, name: str, cfg: TargetConfig):
        self.name = name
        self.cfg = cfg
        self.type = cfg.type
        self.kind = task_kind(cfg.type)  # what the type means: mmfit/tasks.py
        self.classes: list[str] = list(cfg.classes or [])
        self.mean, self.std = 0.0, 1.0
        self.ctc = self.kind.writes and cfg.decoder == "ctc"
        self.chars: list[str] = []  # ctc: the characters, id 2 onwards
        self.text = TextProcessor(name, TextConfig(max_length=cfg.max_length, vocab_size=cfg.vocab_size)) \
            if self.kind.writes and not self.ctc else None

    @property
    def loss_kind(self) -> str:
        """The loss (models/losses.py): the kind's, or `ctc:<audio column>` for a CTC transcriber (its
        rows without that audio are left out of the loss)."""
        return f"ctc:{self.cfg.source}" if self.ctc else self.kind.loss

    @property
    def n_outputs(self) -> int:
        if self.kind.writes:
            return CTC_FIRST + len(self.chars) if self.ctc else self.text.vocab_size
        return self.kind.width or len(self.classes)

    def parse(self, values: list, rows, missing, errors: ErrorLog) -> list:
        """Per row: None (missing), a str label, a list of labels, or a float."""
        out: list = [None] * len(values)
        for i in rows:
            v = values[i]
            if missing(v):
                continue
            if self.kind.writes:
                out[i] = str(v).strip()
            elif self.kind.numeric:
                x, reason = parse_number(v)
                if reason:
                    errors.add(i, self.name, reason)
                out[i] = x
            elif self.kind.label_set:
                out[i] = [s.strip() for s in str(v).split(self.cfg.separator) if s.strip()]
            else:
                if isinstance(v, float) and v.is_integer():
                    v = int(v)  # 3.0 from a numeric column is the label "3"
                out[i] = str(v).strip()
        return out

    def fit(self, parsed: list, train_rows) -> None:
        if self.kind.paired:
            return
        if self.ctc:
            self.chars = sorted({ch for i in train_rows if parsed[i] is not None for ch in parsed[i]})
            return
        if self.kind.writes:
            self.text.fit([parsed[i] for i in train_rows if parsed[i] is not None] or [""])
            return
        if self.kind.numeric:
            x = np.array([parsed[i] for i in train_rows if parsed[i] is not None], dtype=np.float64)
            if len(x):
                self.mean = float(x.mean())
                self.std = float(x.std()) if len(x) > 1 and x.std() > 1e-12 else 1.0
            return
        seen: set[str] = set()
        for i in train_rows:
            v = parsed[i]
            if v is not None:
                seen.update(v if isinstance(v, list) else [v])
        if not self.classes:
            self.classes = sorted(seen, key=_natural_key)

    def check(self, parsed: list, rows, split: str, errors: ErrorLog, train_rows=None) -> None:
        """Labels outside the known set, and declared classes with no training rows."""
        if not self.kind.labels:
            return
        known = set(self.classes)
        for i in rows:
            v = parsed[i]
            for lab in (v if isinstance(v, list) else [v] if v is not None else []):
                if lab not in known:
                    reason = (
                        f"label {lab!r} has no rows in the training split" if split != "predict"
                        else f"label {lab!r} was never seen in training (known: {', '.join(self.classes)})"
                    )
                    errors.add(i, self.name, reason)
        if train_rows is not None:
            seen = set()
            for i in train_rows:
                v = parsed[i]
                seen.update(v if isinstance(v, list) else [v] if v is not None else [])
            empty = [c for c in self.classes if c not in seen]
            if empty and self.kind.exclusive:
                from mmfit.config import ConfigError

                raise ConfigError(
                    f"data.targets.{self.name}.classes: class(es) {empty} have no rows in the training split"
                )

    def encode(self, parsed: list) -> tuple[np.ndarray, np.ndarray]:
        n = len(parsed)
        mask = np.array([v is not None for v in parsed], bool)
        if self.kind.paired:  # a pair where both sides are there
            return np.zeros(n, np.float32), mask
        if self.kind.writes:
            return self.token_ids([v or "" for v in parsed]), mask
        if self.kind.numeric:
            y = np.array([((v - self.mean) / self.std) if v is not None else 0.0 for v in parsed], np.float32)
            return y, mask
        index = {c: i for i, c in enumerate(self.classes)}
        if self.kind.label_set:  # multi-hot
            y = np.zeros((n, len(self.classes)), np.float32)
            for i, v in enumerate(parsed):
                for lab in v or []:
                    y[i, index[lab]] = 1.0
            return y, mask
        y = np.array([index[v] if v is not None else -1 for v in parsed], np.int64)
        return y, mask

    def state(self) -> dict:
        s = {"type": self.type, "weight": self.cfg.weight}
        if self.kind.numeric:
            s.update(mean=self.mean, std=self.std)
        elif self.kind.paired:
            s["between"] = list(self.cfg.between or [])
        elif self.ctc:
            s["chars"] = self.chars
        elif self.kind.writes:
            s["tokenizer"] = self.text.tokenizer.to_str()
        else:
            s["classes"] = self.classes
        return s

    @classmethod
    def from_state(cls, name: str, cfg: TargetConfig, s: dict) -> "TargetProcessor":
        p = cls(name, cfg)
        p.classes = list(s.get("classes", []))
        p.mean, p.std = s.get("mean", 0.0), s.get("std", 1.0)
        p.chars = list(s.get("chars", []))
        if p.kind.writes and not p.ctc:
            from tokenizers import Tokenizer

            p.text._set_wordpiece(Tokenizer.from_str(s["tokenizer"]))
        return p

    # -- generation
    def specials(self) -> tuple[int, Optional[int], Optional[int]]:
        """(pad, start, end) ids of a generation target's vocabulary (a CTC one has only the blank)."""
        if self.ctc:
            return 0, None, None
        tok = self.text.tokenizer
        return 0, tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")

    def token_ids(self, texts: list[str]) -> np.ndarray:
        """[N, max_length] int64: [CLS] text [SEP], padded with 0 (cut to fit); for CTC the characters'
        ids, padded with the blank."""
        L = self.cfg.max_length
        if self.ctc:
            index = {c: i + CTC_FIRST for i, c in enumerate(self.chars)}
            out = np.zeros((len(texts), L), np.int64)
            for i, text in enumerate(texts):
                ids = [index.get(c, CTC_UNSEEN) for c in text[:L]]
                out[i, : len(ids)] = ids
            return out
        pad, start, end = self.specials()
        out = np.full((len(texts), L), pad, np.int64)
        for i, enc in enumerate(self.text.tokenizer.encode_batch(texts) if texts else []):
            ids = [t for t, m in zip(enc.ids, enc.attention_mask) if m][: L - 2]
            out[i, : len(ids) + 2] = [start, *ids, end]
        return out

    def reference(self, row) -> str:
        """A target row's ids (token_ids) -> its text as the metrics compare it."""
        return self.decode(row if self.ctc else row[1:])

    def decode(self, ids) -> str:
        """Generated ids (after the start token) -> text, up to the end token. CTC: ids already
        collapsed (models/heads.py), blanks left out; a character unseen in training reads U+FFFD."""
        if self.ctc:
            return "".join(self.chars[t - CTC_FIRST] if t >= CTC_FIRST else "\ufffd" for t in map(int, ids) if t)
        pad, start, end = self.specials()
        keep = []
        for t in ids:
            t = int(t)
            if t == end:
                break
            if t not in (pad, start):
                keep.append(t)
        return self.text.tokenizer.decode(keep).replace(" ##", "")


def _natural_key(s: str):
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)
