"""Text: a local Hugging Face tokenizer, or WordPiece trained on the training text."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np

from mmfit.config import TextConfig

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_FILE = "tokenizer-{column}.json"  # a trained WordPiece tokenizer, in the run directory


def build_wordpiece_vocab(texts: list[str], normalizer, pre, size: int) -> dict[str, int]:
    """A deterministic WordPiece vocabulary: specials, every character (word-initial and `##`
    continuation), frequent word-initial and continuation pieces, then whole words by frequency.

    The `tokenizers` trainer breaks ties through hash-map order, so two processes can learn
    different vocabularies from the same text; runs must be reproducible (and resumable), so
    the vocabulary is counted here, ties broken by the string itself.
    """
    words: Counter = Counter()
    for t in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t)))
    chars: set[str] = set()
    pieces: Counter = Counter()
    for w, c in words.items():
        chars.update(w)
        for n in (2, 3, 4):  # short prefixes and suffixes give typos and unseen words a fallback
            if len(w) > n:
                pieces[w[:n]] += c
                pieces["##" + w[-n:]] += c
    vocab = list(SPECIALS)
    vocab += sorted(chars) + ["##" + ch for ch in sorted(chars)]
    ranked = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
    frequent_pieces = sorted(((p, c) for p, c in pieces.items() if c >= 3), key=lambda kv: (-kv[1], kv[0]))
    seen = set(vocab)
    budget_words = max(0, size - len(vocab)) * 3 // 4
    for w, _ in ranked[:budget_words]:
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    for p, _ in frequent_pieces + ranked[budget_words:]:
        if len(vocab) >= size:
            break
        if p not in seen:
            vocab.append(p)
            seen.add(p)
    return {tok: i for i, tok in enumerate(vocab)}


class TextProcessor:
    kind = "text"

    def __init__(self, column: str, cfg: TextConfig, pretrained_dir: Optional[str] = None):
        self.column = column
        self.cfg = cfg
        self.pretrained_dir = pretrained_dir  # tokenizer of a pretrained encoder
        self.tokenizer = None  # tokenizers.Tokenizer (WordPiece) or transformers tokenizer
        self.vocab_size = 0
        self.fixed = False  # fitted elsewhere (model.encoders.<m>.init): fit() leaves it as it is

    # -- fitting and state
    def fit(self, texts: list[str]) -> None:
        if self.pretrained_dir or (self.cfg.tokenizer not in ("auto", "wordpiece")):
            self._load_hf(self.pretrained_dir or self.cfg.tokenizer)
            return
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

        norm = [normalizers.NFD(), normalizers.StripAccents()]
        if self.cfg.lowercase:
            norm.insert(0, normalizers.Lowercase())
        normalizer = normalizers.Sequence(norm)
        pre = pre_tokenizers.BertPreTokenizer()
        vocab = build_wordpiece_vocab(texts, normalizer, pre, self.cfg.vocab_size)
        tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre
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

    def save(self, run_dir: Path, encoder_dir: Path) -> dict:
        """Write the tokenizer into the run (a pretrained one into its encoder's folder there)."""
        if self.pretrained_dir:
            target = encoder_dir / "tokenizer"
            self.tokenizer.save_pretrained(str(target))
            return {"kind": "text", "tokenizer": "hf", "path": str(target.relative_to(run_dir))}
        name = TOKENIZER_FILE.format(column=self.column)
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

    def reused(self, cfg: TextConfig) -> "TextProcessor":
        """This fitted tokenizer under another run's text settings (a run whose encoder starts from
        this one's weights must read text into the same token ids)."""
        p = TextProcessor(self.column, cfg, self.pretrained_dir)
        if self.pretrained_dir:
            p.tokenizer, p.vocab_size = self.tokenizer, self.vocab_size
        else:
            p._set_wordpiece(self.tokenizer)
        p.fixed = True
        return p

    def token_roles(self) -> tuple[list[int], int, int]:
        """-> (special ids augmentation must not touch, id that replaces a dropped token, pad id)."""
        if self.pretrained_dir:
            t = self.tokenizer
            repl = t.mask_token_id if t.mask_token_id is not None else t.unk_token_id
            return list(t.all_special_ids), int(repl if repl is not None else 0), int(t.pad_token_id or 0)
        ids = [self.tokenizer.token_to_id(s) for s in SPECIALS]
        return [i for i in ids if i is not None], self.tokenizer.token_to_id("[MASK]"), 0

    def decode(self, ids: list[int]) -> str:
        """Token ids back to readable text (for previews)."""
        if self.pretrained_dir:
            return self.tokenizer.decode(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=False).replace(" ##", "")

    def fingerprint(self) -> str:
        """What decides the token ids of a text: the tokenizer itself and the length (a cache key)."""
        import hashlib

        t = self.tokenizer
        if hasattr(t, "to_str"):
            spec = t.to_str()
        elif getattr(t, "is_fast", False):
            spec = t.backend_tokenizer.to_str()
        else:
            spec = json.dumps(t.get_vocab(), sort_keys=True)
        return hashlib.sha1(f"{spec}\n{self.cfg.max_length}\n{bool(self.pretrained_dir)}".encode()).hexdigest()

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
