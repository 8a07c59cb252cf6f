"""Text: a local Hugging Face tokenizer, or WordPiece trained on the training text."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from mmfit.config import TextConfig

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class TextProcessor:
    kind = "text"

    def __init__(self, column: str, cfg: TextConfig, pretrained_dir: Optional[str] = None):
        self.column = column
        self.cfg = cfg
        self.pretrained_dir = pretrained_dir  # tokenizer of a pretrained encoder
        self.tokenizer = None  # tokenizers.Tokenizer (WordPiece) or transformers tokenizer
        self.vocab_size = 0

    # -- fitting and state
    def fit(self, texts: list[str]) -> None:
        if self.pretrained_dir or (self.cfg.tokenizer not in ("auto", "wordpiece")):
            self._load_hf(self.pretrained_dir or self.cfg.tokenizer)
            return
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        norm = [normalizers.NFD(), normalizers.StripAccents()]
        if self.cfg.lowercase:
            norm.insert(0, normalizers.Lowercase())
        tok.normalizer = normalizers.Sequence(norm)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=self.cfg.vocab_size, special_tokens=SPECIALS, min_frequency=1)
        tok.train_from_iterator(texts, trainer=trainer)
        self._set_wordpiece(tok)

    def _set_wordpiece(self, tok) -> None:
        tok.enable_truncation(self.cfg.max_length - 1)
        tok.enable_padding(pad_id=0, pad_token="[PAD]", length=self.cfg.max_length - 1)
        self.tokenizer = tok
        self.vocab_size = tok.get_vocab_size()

    def _load_hf(self, path: str) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.vocab_size = len(self.tokenizer)
        self.pretrained_dir = str(path)

    def save(self, run_dir: Path) -> dict:
        if self.pretrained_dir:
            target = run_dir / "encoders" / self.column / "tokenizer"
            self.tokenizer.save_pretrained(str(target))
            return {"kind": "text", "tokenizer": "hf", "path": str(target.relative_to(run_dir))}
        name = f"tokenizer-{self.column}.json"
        self.tokenizer.save(str(run_dir / name))
        return {"kind": "text", "tokenizer": "wordpiece", "path": name}

    @classmethod
    def load(cls, column: str, cfg: TextConfig, state: dict, run_dir: Path) -> "TextProcessor":
        p = cls(column, cfg)
        if state["tokenizer"] == "hf":
            p._load_hf(str(run_dir / state["path"]))
        else:
            from tokenizers import Tokenizer

            p._set_wordpiece(Tokenizer.from_file(str(run_dir / state["path"])))
        return p

    # -- encoding
    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """-> input_ids int64 [N, L], attention_mask bool [N, L]."""
        L = self.cfg.max_length
        if not texts:
            return {"input_ids": np.zeros((0, L), np.int64), "attention_mask": np.zeros((0, L), bool)}
        if self.pretrained_dir:
            enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=L, return_tensors="np")
            return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(bool)}
        encs = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=bool)
        # a [CLS] token first, so even an all-unknown text has one real position
        cls_id = self.tokenizer.token_to_id("[CLS]")
        ids = np.concatenate([np.full((len(texts), 1), cls_id, np.int64), ids], axis=1)
        mask = np.concatenate([np.ones((len(texts), 1), bool), mask], axis=1)
        return {"input_ids": ids, "attention_mask": mask}
