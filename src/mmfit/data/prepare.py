"""From a manifest to split TensorData: validate, decode (cached), split, fit, encode.

`Preprocessor` holds every fitted piece of preprocessing (tokenizers, statistics, label maps);
its state is saved with the run (labels.json, written by mmfit.run.store, plus the tokenizers it writes
into the run directory) so prediction repeats it exactly.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch

from mmfit.config import Config, encoder_config
from mmfit.data.batch import TensorData
from mmfit.data.cache import FeatureCache, RowView, ShardedArray, content_hash
from mmfit.data.errors import PREDICT_HINT, ErrorLog
from mmfit.data.manifest import (PathResolver, assign_splits, cell_label, check_columns, data_root, file_cell,
                                 is_missing, manifest_chunks, with_sources)
from mmfit.data.modalities.audio import AudioProcessor
from mmfit.data.modalities.image import DecodeError, ImageProcessor
from mmfit.data.modalities.tabular import TabularProcessor
from mmfit.data.modalities.text import TextProcessor
from mmfit.data.modalities.video import VideoProcessor
from mmfit.data.targets import TargetProcessor
from mmfit.registry import encoder_info
from mmfit.tasks import task_kind


def _log(msg: str) -> None:
    print(msg)


@dataclass
class Parsed:
    """Per-row parsed values of a whole manifest, before fitting."""

    files: dict  # modality -> (features [N,...], present [N])
    texts: dict  # modality -> list[str | None]
    tabular: Optional[dict]
    targets: dict  # task -> list
    n: int  # rows in the manifest
    tokens: dict = field(default_factory=dict)  # text modality -> (ids, mask) ShardedArrays, once encoded


def decode_message(kind: str, col: str, c: dict, cache) -> str:
    if not c["decoded"] and not c["shards"]:
        return f"cache hit: {kind} column '{col}' ({c['files']} files, 0 decoded)"
    where = f" (cached in {cache.dir}, {c['shards']} shard(s))" if cache is not None else ""
    return f"decoded {kind} column '{col}': {c['decoded']} files{where}"


def concat_parsed(parts: list[Parsed]) -> Parsed:
    """The Parsed of consecutive chunks, as one (file features: their shards, end to end)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    files = {}
    for col in first.files:
        shards = [x for p in parts for x in p.files[col][0].parts]
        files[col] = (ShardedArray(shards), np.concatenate([p.files[col][1] for p in parts]))
    texts = {col: [t for p in parts for t in p.texts[col]] for col in first.texts}
    tab = None
    if first.tabular is not None:
        tab = {"values": np.concatenate([p.tabular["values"] for p in parts]),
               "cats": {c: [v for p in parts for v in p.tabular["cats"][c]] for c in first.tabular["cats"]}}
    targets = {t: [v for p in parts for v in p.targets[t]] for t in first.targets}
    return Parsed(files, texts, tab, targets, sum(p.n for p in parts))


class Preprocessor:
    def __init__(self, cfg: Config, resolve_pretrained: bool = True):
        self.cfg = cfg
        d = cfg.data
        self.files: dict = {}
        self.texts: dict[str, TextProcessor] = {}
        numeric, categorical, dates, vectors = [], [], [], []
        for col, c in d.columns.items():
            if c.role in ("image", "audio", "video", "text"):
                enc = encoder_config(cfg, col)
                info = encoder_info(enc.name)
            if c.role == "image":
                self.files[col] = ImageProcessor(col, d.image)
            elif c.role == "video":
                self.files[col] = VideoProcessor(col, d.video, d.image)
            elif c.role == "audio":
                feats = d.audio.features if d.audio.features != "auto" else info.audio_features
                self.files[col] = AudioProcessor(col, d.audio, feats, track=c.source is not None)
            elif c.role == "text":
                # a pretrained encoder reads text with its own tokenizer (a run's copy, once loaded)
                pre_dir = info.tokenizer(enc.path) if info.tokenizer and resolve_pretrained else None
                self.texts[col] = TextProcessor(col, d.text, pre_dir)
            elif c.role == "numeric":
                numeric.append(col)
            elif c.role == "datetime":
                dates.append(col)
            elif c.role == "vector":
                vectors.append(col)
            else:
                categorical.append(col)
        self.tabular = (TabularProcessor(numeric, categorical, dates, vectors)
                        if numeric or categorical or dates or vectors else None)
        self.targets = {t: TargetProcessor(t, tc) for t, tc in d.targets.items()}

    @property
    def modalities(self) -> list[str]:
        mods = [c for c in self.cfg.data.columns if c in self.files or c in self.texts]
        return mods + (["tabular"] if self.tabular else [])

    # ------------------------------------------------------------------ parsing
    def _missing(self, v) -> bool:
        return is_missing(v, self.cfg.data.na_values)

    def parse(self, df: pd.DataFrame, errors: ErrorLog, cache: Optional[FeatureCache], with_targets: bool,
              root: Path, log: Callable = _log, pool=None, counts: Optional[dict] = None) -> Parsed:
        """Validate and parse the rows of `df` (the whole manifest, or one chunk of it with an
        ErrorLog shifted to its rows). Decode counts are logged per column, or added to `counts`."""
        d = self.cfg.data
        df = with_sources(df, d)
        rows = np.arange(len(df))
        resolver = PathResolver(root) if root is not None else None  # None: file cells must be bytes
        files = {}
        for col, proc in self.files.items():
            features, ok, c = self._decode_column(df, col, proc, resolver, errors, cache, pool)
            files[col] = (features, ok)
            if counts is None:
                log(decode_message(proc.kind, col, c, cache))
            else:
                total = counts.setdefault((proc.kind, col), {"files": 0, "decoded": 0, "shards": 0})
                for k, v in c.items():
                    total[k] += v
        texts = {}
        for col in self.texts:
            vals = []
            for i, v in enumerate(df[col].tolist()):
                if self._missing(v):
                    vals.append(None)
                else:
                    vals.append(str(v))
            texts[col] = vals
        tab = self.tabular.parse(df, rows, self._missing, errors) if self.tabular else None
        for col, c in d.columns.items():  # required columns may not be empty
            if c.required:
                for i, v in enumerate(df[col].tolist()):
                    if self._missing(v):
                        errors.add(i, col, "empty text" if c.role == "text" else "required value is empty")
        targets = {}
        if with_targets:
            for t, proc in self.targets.items():
                if t in df.columns and not proc.kind.paired:
                    targets[t] = proc.parse(df[t].tolist(), rows, self._missing, errors)
        parsed = Parsed(files, texts, tab, targets, len(df))
        present = self._present(parsed, len(df))
        for t, proc in self.targets.items():  # a matching task's target: the row has both sides
            if proc.kind.paired:
                a, b = proc.cfg.between
                parsed.targets[t] = [1.0 if x and y else None for x, y in zip(present[a], present[b])]
        bad = errors.bad_rows()  # rows already reported need no second, derived complaint
        for i in np.flatnonzero(~np.any(np.stack(list(present.values())), axis=0)):
            if i not in bad:
                errors.add(i, "*", "row has no input value in any column")
        labelled = [t for t in targets if not self.targets[t].kind.paired]
        if with_targets and labelled:
            for i in rows:
                if all(targets[t][i] is None for t in labelled) and i not in bad:
                    errors.add(i, ",".join(labelled), "row has no target value")
        return parsed

    def _decode_column(self, df, col, proc, resolver, errors, cache, pool=None) -> tuple:
        """One file column -> (ShardedArray of features, ok [N], counts). Rows go in blocks of
        data.shard_rows: each block is looked up in the cache, or decoded and stored as one shard,
        so memory holds one block at a time. With a process `pool` (mmfit preprocess --workers)
        missing blocks decode in its processes; otherwise in threads of this process."""
        n = len(df)
        values = df[col].tolist()
        size = self.cfg.data.shard_rows
        ok = np.zeros(n, bool)
        parts: dict[int, object] = {}
        todo = []  # (block start, items, key) of blocks to decode
        files = 0
        for s in range(0, n, size):
            items, keys = [], []
            for i in range(s, min(n, s + size)):
                v = file_cell(values[i])
                item, key = None, "absent"
                if self._missing(v):
                    pass
                elif isinstance(v, (bytes, bytearray)):  # file contents (the server), not a path
                    item = bytes(v)
                    key = content_hash(item) if cache else "bytes"
                elif resolver is None:
                    errors.add(i, col, "file paths are not accepted here: send the file's contents")
                    key = "error"
                else:
                    p, reason = resolver.resolve(str(v), folders=proc.kind in ("image", "video"))
                    if reason:
                        errors.add(i, col, reason, str(v))
                        key = "error"
                    else:
                        item, key = p, "file"
                items.append(item)
                keys.append(key)
            if cache is not None:  # content hashes, from the index where a file did not change
                files_at = [j for j, it in enumerate(items) if isinstance(it, Path)]
                for j, h in zip(files_at, cache.hashes.many([items[j] for j in files_at])):
                    keys[j] = h
            files += sum(it is not None for it in items)
            key = cache.key(proc.cache_config(), keys) if cache is not None else None
            hit = cache.load(proc.kind, key) if cache is not None else None
            if hit is None:
                todo.append((s, items, key))
                continue
            parts[s] = hit["path"]
            ok[s : s + len(items)] = hit["ok"]
            for i, reason in hit["errors"]:
                errors.add(s + i, col, reason, cell_label(values[s + i]))
        decoded = sum(it is not None for _, items, _ in todo for it in items)
        if todo:
            cache_dir = cache.dir if cache is not None else None
            threads = 1 if pool is not None else min(8, os.cpu_count() or 1)  # a pool: a process per core
            jobs = [(proc, items, cache_dir, key, threads) for _, items, key in todo]
            if pool is not None and len(todo) > 1:
                results = list(pool.map(_decode_block, *zip(*jobs)))
            else:
                results = (_decode_block(*job) for job in jobs)  # one block in memory at a time
            for (s, items, _), (part, block_ok, block_errors) in zip(todo, results):
                parts[s] = part
                ok[s : s + len(items)] = block_ok
                for i, reason in block_errors:
                    errors.add(s + i, col, reason, cell_label(values[s + i]))
        counts = {"files": files, "decoded": decoded, "shards": len(todo)}
        if not parts:  # no rows: an empty column of the right shape and type
            parts[0] = proc.finalize(np.stack([proc.empty()]))[:0]
        return ShardedArray([parts[s] for s in sorted(parts)]), ok, counts

    def _present(self, parsed: Parsed, n: int) -> dict[str, np.ndarray]:
        present = {}
        for m in self.modalities:
            if m in parsed.files:
                present[m] = parsed.files[m][1].copy()
            elif m in parsed.texts:
                present[m] = np.array([t is not None for t in parsed.texts[m]], bool)
            else:
                v = parsed.tabular
                p = ~np.all(np.isnan(v["values"]), axis=1) if v["values"].shape[1] else np.zeros(n, bool)
                for col in self.tabular.categorical:
                    p |= np.array([c is not None for c in v["cats"][col]], bool)
                present[m] = p
        return present

    # ------------------------------------------------------------------ fitting / encoding
    def fit_inputs(self, parsed: Parsed, train_rows: np.ndarray) -> None:
        """Tokenizers and tabular statistics, from the training rows only (targets are fitted first)."""
        for col, proc in self.texts.items():
            if proc.fixed:
                continue
            proc.fit([parsed.texts[col][i] for i in train_rows if parsed.texts[col][i] is not None] or [""])
        if self.tabular:
            self.tabular.fit(parsed.tabular, train_rows)

    def _tokenize(self, m: str, texts: list, cache: Optional[FeatureCache]) -> tuple:
        """Token ids (int32) and attention masks of every row, a shard of data.shard_rows rows at a
        time, into the cache (keyed by the tokenizer and the texts): they need no memory per row,
        and a second run with the same tokenizer tokenises nothing."""
        proc, size = self.texts[m], self.cfg.data.shard_rows
        config = {"kind": "tokens", "version": 1, "tokenizer": proc.fingerprint()} if cache is not None else None
        ids, masks = [], []
        for s in range(0, max(len(texts), 1), size):
            block = texts[s : s + size]
            key = None
            if cache is not None:
                key = cache.key(config, [content_hash(t.encode()) if t is not None else "absent" for t in block])
                hit, hit_mask = cache.load("tokens", key), cache.load("tokens-mask", key)
                if hit is not None and hit_mask is not None:
                    ids.append(hit["path"])
                    masks.append(hit_mask["path"])
                    continue
            enc = proc.encode([t or "" for t in block])
            a, b = enc["input_ids"].astype(np.int32), enc["attention_mask"]
            if cache is not None:
                everything = np.ones(len(block), bool)
                a, b = cache.put("tokens", key, a, everything, []), cache.put("tokens-mask", key, b, everything, [])
            ids.append(a)
            masks.append(b)
        return ShardedArray(ids), ShardedArray(masks)

    def encode(self, parsed: Parsed, rows: np.ndarray, cache: Optional[FeatureCache] = None) -> TensorData:
        present_all = self._present(parsed, parsed.n)
        # sharded columns: read per batch from the mapped shards, or held in RAM (data.in_memory)
        view = (lambda a: a.take(rows)) if self.cfg.data.in_memory else (lambda a: RowView(a, rows))
        inputs, present = {}, {}
        for m in self.modalities:
            if m in parsed.files:
                inputs[m] = {"x": view(parsed.files[m][0])}
            elif m in parsed.texts:
                if m not in parsed.tokens:
                    parsed.tokens[m] = self._tokenize(m, parsed.texts[m], cache)
                inputs[m] = {k: view(a) for k, a in zip(("input_ids", "attention_mask"), parsed.tokens[m])}
            else:
                sub = {"values": parsed.tabular["values"][rows],
                       "cats": {c: [parsed.tabular["cats"][c][i] for i in rows] for c in self.tabular.categorical}}
                inputs[m] = self.tabular.encode(sub)
            present[m] = present_all[m][rows]
        targets, tmask = {}, {}
        for t, vals in parsed.targets.items():
            y, mk = self.targets[t].encode([vals[i] for i in rows])
            targets[t], tmask[t] = y, mk
        return TensorData(inputs, present, targets, tmask, rows)

    # ------------------------------------------------------------------ prediction-time
    def transform(self, df: pd.DataFrame, root: Optional[Path], on_error: str = "raise", log: Callable = _log):
        """Preprocess new rows with the fitted state; file paths resolve against `root`, and
        file cells may hold the file's bytes instead. With root=None only bytes are accepted
        (the server never opens a path a client sent). -> (TensorData, ErrorLog).
        Targets are used where the columns are present."""
        df = absent_columns_as_empty(df.reset_index(drop=True), self.cfg.data)
        check_columns(df, self.cfg.data, need_targets=False)
        errors = ErrorLog(on_error, source="input data", absent_ok=self.files, hint=PREDICT_HINT)
        parsed = self.parse(df, errors, cache=None, with_targets=True, root=root, log=log)
        # rows without targets are fine at predict time
        errors.errors = [e for e in errors.errors if e.reason != "row has no target value"]
        for t, vals in parsed.targets.items():
            self.targets[t].check(vals, range(len(df)), "predict", errors)
        bad = errors.resolve()
        keep = np.array([i for i in range(len(df)) if i not in bad], dtype=np.int64)
        return self.encode(parsed, keep), errors

    def input_spec(self) -> dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]]:
        """Per modality, its input tensors' per-row shapes and dtypes, as a Batch carries them (the
        model's signature; a table without numbers or without categories has a zero-width tensor)."""
        out = {}
        for m in self.modalities:
            if m in self.texts:
                n = self.cfg.data.text.max_length
                out[m] = {"input_ids": ((n,), torch.int64), "attention_mask": ((n,), torch.bool)}
            elif m == "tabular":
                k, c = len(self.tabular.number_features), len(self.tabular.categorical)
                out[m] = {"values": ((k,), torch.float32), "categories": ((c,), torch.int64),
                          "feature_mask": ((k + c,), torch.bool)}
            else:
                out[m] = {"x": (self.files[m].feature_shape(), torch.float32)}  # as the model sees it
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path, encoder_dir: Callable[[str], Path]) -> dict:
        """Write the tokenizers into `directory` (a run; a pretrained encoder's into `encoder_dir(m)`);
        -> the rest of the state (labels.json)."""
        state = {"version": 1, "modalities": {}, "targets": {}}
        for col, proc in self.texts.items():
            state["modalities"][col] = proc.save(directory, encoder_dir(col))
        for col, proc in self.files.items():
            state["modalities"][col] = {"kind": proc.kind, **proc.cache_config()}
        if self.tabular:
            state["modalities"]["tabular"] = self.tabular.state()
        for t, proc in self.targets.items():
            state["targets"][t] = proc.state()
        return state

    @classmethod
    def load(cls, cfg: Config, state: dict, run_dir: Path) -> "Preprocessor":
        """Rebuild from a run's state (labels.json) and directory; needs no packaged-model files
        (tokenizers live in the run)."""
        pre = cls(cfg, resolve_pretrained=False)
        pre.texts = {col: TextProcessor.load(col, cfg.data.text, state["modalities"][col], run_dir)
                     for col in pre.texts}
        if pre.tabular:
            pre.tabular = TabularProcessor.from_state(state["modalities"]["tabular"])
        for col, proc in pre.files.items():  # an `auto` window as fitted on the training rows
            window = state["modalities"].get(col, {}).get("window")
            if isinstance(proc, ImageProcessor) and proc.cfg.window == "auto" and isinstance(window, list):
                proc.column_window = (float(window[0]), float(window[1]))
        pre.targets = {t: TargetProcessor.from_state(t, tc, state["targets"][t]) for t, tc in cfg.data.targets.items()}
        return pre


def _decode_block(proc, items: list, cache_dir: Optional[Path], key: Optional[str], threads: int):
    """Decode one block (a path, bytes or None per row) -> (the cached shard's path, or the
    features when there is no writable cache; ok [n]; [[row in block, reason]])."""

    def work(i):
        try:
            p = items[i]
            return i, proc.decode_bytes(p) if isinstance(p, bytes) else proc.decode_path(p), None
        except DecodeError as e:
            return i, None, str(e)
        except OSError as e:
            return i, None, f"cannot read file: {e}"

    raw = [proc.empty()] * len(items)
    ok = np.zeros(len(items), bool)
    errs = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i, arr, reason in pool.map(work, [i for i, it in enumerate(items) if it is not None]):
            if reason:
                errs.append([int(i), reason])
            elif arr is not None:  # None: absent without an error (a video's missing sound track)
                raw[i], ok[i] = arr, True
    features = proc.finalize(np.stack(raw))
    if cache_dir is not None:
        return FeatureCache(cache_dir).put(proc.kind, key, features, ok, errs), ok, errs
    return features, ok, errs


def absent_columns_as_empty(df: pd.DataFrame, d) -> pd.DataFrame:
    """New data that lacks an input column altogether (a site without audio): that column is empty
    in every row, so its modality is absent, as in a row with an empty cell; one warning names it
    (and a likely misspelling). A required column, or all of them missing, is still refused."""
    gone = [c for c, cc in d.columns.items() if c not in df.columns and cc.source is None]
    if not gone or any(d.columns[c].required for c in gone) or len(gone) == len(d.columns):
        return df  # check_columns names what is wrong
    import difflib
    import warnings

    have = [str(c) for c in df.columns]
    close = {c: difflib.get_close_matches(c, have, n=1, cutoff=0.5) for c in gone}
    hints = [f"'{c}' (did you mean '{close[c][0]}'?)" if close[c] else f"'{c}'" for c in gone]
    warnings.warn(f"input column(s) {', '.join(hints)} not in the data: treated as absent in every row",
                  UserWarning, stacklevel=3)
    return df.assign(**{c: None for c in gone})


WINDOW_SAMPLE = 256  # training images an `auto` window is fitted on: percentiles of pooled values settle fast


def fit_image_windows(pre: Preprocessor, cfg: Config, df: Optional[pd.DataFrame], log: Callable = _log) -> None:
    """`data.image.window: auto`: each image column's one window, fitted before decoding on a sample of
    its training rows (ImageProcessor.fit_window; it is part of the decoded images' cache key and of
    labels.json). The training rows are those the split assigns among rows with an image and a
    target; a row found bad later (in another column) can move a few rows between splits, which the
    percentiles of a few hundred images do not notice. A no-op without an image of more than 8 bits."""
    d = cfg.data
    cols = [c for c, p in pre.files.items() if isinstance(p, ImageProcessor) and p.cfg.window == "auto"]
    if not cols:
        return
    target = next(iter(d.targets), None)  # none while pretraining
    keep_cols = set(cols) | {c for c in (d.split.column, d.split.group_column, target) if c}
    frames = [chunk[[c for c in chunk.columns if c in keep_cols]]
              for chunk in manifest_chunks(df, d.manifest, d.shard_rows * 8)]
    table = pd.concat(frames, ignore_index=True)
    resolver = PathResolver(data_root(d))
    for col in cols:
        if col not in table.columns:
            continue
        cells = [file_cell(v) for v in table[col].tolist()]
        usable = np.array([not is_missing(v, d.na_values) for v in cells])
        if target is not None and target in table.columns:
            usable &= np.array([not is_missing(v, d.na_values) for v in table[target].tolist()])
        strat = table[target].astype(str) if target is not None and target in table.columns else None
        split = assign_splits(table, d, usable, ErrorLog("skip"), strat).to_numpy()
        rows = np.flatnonzero(split == "train")
        if len(rows) > WINDOW_SAMPLE:
            rows = np.sort(np.random.default_rng(d.split.seed).choice(rows, WINDOW_SAMPLE, replace=False))
        files = []
        for i in rows:
            v = cells[i]
            if isinstance(v, (bytes, bytearray)):
                files.append(v)
                continue
            p, reason = resolver.resolve(str(v), folders=True)
            if not reason:
                files.append(p)
        pre.files[col].fit_window(files, log)


def decode_share(cfg: Config, df: Optional[pd.DataFrame], rank: int, world: int,
                 fitted: Optional[Preprocessor] = None, log: Callable = _log) -> dict:
    """One process's share of decoding, before prepare_training (every rank of a DDP or Ray Train run):
    the manifest's blocks of data.shard_rows rows whose number is `rank` modulo `world` are looked up
    in the cache and decoded where missing, in this process's threads, with the keys prepare_training
    will look them up by (the image windows fitted on training rows as it fits them, or `fitted`'s).
    Nothing is kept in memory and no error is raised here: prepare_training then finds every block in
    the cache and reports bad rows as a one-process run does. A cache that is not shared between the
    ranks (another machine's disk) or not writable costs speed only: the blocks it lacks are decoded
    again there. -> {"files", "decoded", "shards"} summed over this share's file columns."""
    d = cfg.data
    if df is None and not d.manifest:
        raise ValueError("data.manifest is not set and no DataFrame was given")
    pre = fitted or Preprocessor(cfg)
    if fitted is None:
        fit_image_windows(pre, cfg, df, log=lambda *_: None)  # prepare_training logs the windows
    total = {"files": 0, "decoded": 0, "shards": 0}
    if not pre.files:
        return total
    cache, counts = FeatureCache(Path(d.cache_dir) if d.cache_dir else None), {}
    for block, chunk in enumerate(manifest_chunks(df, d.manifest, d.shard_rows)):
        if block == 0:
            check_columns(chunk, d, need_targets=True)  # every rank stops with the same message
        if block % world == rank and len(chunk):  # a chunk of shard_rows rows is one block of each column
            pre.parse(chunk, ErrorLog("skip"), cache, with_targets=False, root=data_root(d), counts=counts)
    for c in counts.values():
        for k in total:
            total[k] += c[k]
    return total


def prepare_training(cfg: Config, df: Optional[pd.DataFrame] = None, log: Callable = _log,
                     fitted: Optional[Preprocessor] = None, workers: int = 0, texts: Optional[dict] = None,
                     pool=None):
    """-> (Preprocessor, {split: TensorData}, ErrorLog). Bad rows raise or are skipped per data.on_error
    (the run writes the skipped ones to skipped.csv).

    With `fitted` (a resumed run), that preprocessing state is reused instead of fitted anew.
    The manifest is read and parsed in chunks of data.shard_rows rows (times `workers`), so the
    whole table is never held at once; file features go to the cache's shards and stay there
    (data.in_memory: false), read per batch. `workers` > 1 decodes missing shards in that many
    processes; `pool` (with `workers`: how many blocks it takes at once), any executor with
    `map(fn, *iterables)` and `shutdown()` to decode them in instead (a Ray cluster's: cluster/engine.py).
    `texts`: fitted text processors to use as they are (per column; the tokenizers of the runs the
    encoders start from)."""
    d = cfg.data
    if df is None and not d.manifest:
        raise ValueError("data.manifest is not set and no DataFrame was given")
    pre = fitted or Preprocessor(cfg)
    errors = ErrorLog(d.on_error, absent_ok=pre.files)
    if texts and fitted is None:
        pre.texts.update({m: p.reused(d.text) for m, p in texts.items() if m in pre.texts})
    if fitted is None:
        fit_image_windows(pre, cfg, df, log)
    cache = FeatureCache(Path(d.cache_dir) if d.cache_dir else None)
    side_cols = [c for c in (d.split.column, d.split.group_column) if c]
    parts, side, counts, offset = [], [], {}, 0
    if pool is None and workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    try:
        for chunk in manifest_chunks(df, d.manifest, d.shard_rows * max(1, workers)):
            if not parts:
                check_columns(chunk, d, need_targets=True)
            parts.append(pre.parse(chunk, errors.shifted(offset, len(chunk)), cache, with_targets=True,
                                   root=data_root(d), log=log, pool=pool, counts=counts))
            side.append(chunk[[c for c in side_cols if c in chunk.columns]])
            offset += len(chunk)
    finally:
        if pool is not None:
            pool.shutdown()
    for (kind, col), c in counts.items():
        log(decode_message(kind, col, c, cache))
    parsed = concat_parsed(parts)
    df = pd.concat(side, ignore_index=True)  # what the split needs: the split and group columns
    bad = errors.resolve()
    keep = np.ones(len(df), bool)
    keep[list(bad)] = False
    first_cls = next((t for t, tc in d.targets.items() if task_kind(tc.type).exclusive), None)
    strat = pd.Series([parsed.targets[first_cls][i] or "" for i in range(len(df))]) if first_cls else None
    split = assign_splits(df, d, keep, errors, strat)
    keep[list(errors.resolve())] = False
    train_rows = np.flatnonzero(keep & (split.to_numpy() == "train"))
    if len(train_rows) == 0:
        raise ValueError("the training split has no rows")
    if fitted is None:
        for t, proc in pre.targets.items():
            proc.fit(parsed.targets[t], train_rows)
    for t, proc in pre.targets.items():
        other = np.flatnonzero(keep & (split.to_numpy() != "train"))
        proc.check(parsed.targets[t], other, "val/test", errors, train_rows=train_rows)
    keep[list(errors.resolve())] = False
    if fitted is None:
        pre.fit_inputs(parsed, train_rows)
    if d.split.refit:  # the preprocessing stays as fitted on train: one Batch serves refit and not
        split = split.where(split != "val", "train")
    splits = {}
    for s in ("train", "val", "test"):
        rows = np.flatnonzero(keep & (split.to_numpy() == s))
        splits[s] = pre.encode(parsed, rows, cache)
    if errors.errors:
        absent = errors.cells_absent()
        kept = f"; kept {absent} unreadable file(s) as absent modalities" if absent else ""
        log(f"skipped {len(errors.bad_rows())} row(s) with bad values{kept} (data.on_error: {d.on_error})")
    return pre, splits, errors
