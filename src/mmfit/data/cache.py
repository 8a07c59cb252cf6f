"""On-disk cache of decoded features, keyed by file content and preprocessing config.

One entry per (column, preprocessing config, ordered content hashes): a second epoch or a
second run over the same files decodes nothing. Entries are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np


def default_cache_dir() -> Path:
    env = os.environ.get("MMFIT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mmfit"


def content_hash(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class FeatureCache:
    def __init__(self, directory: Optional[Path]):
        self.dir = Path(directory) if directory else default_cache_dir()

    def key(self, config: dict, item_keys: list[str]) -> str:
        h = hashlib.sha1(json.dumps(config, sort_keys=True).encode())
        for k in item_keys:
            h.update(k.encode())
            h.update(b"\n")
        return h.hexdigest()

    def _path(self, kind: str, key: str) -> Path:
        return self.dir / f"{kind}-{key}.npz"

    def load(self, kind: str, key: str) -> Optional[dict]:
        p = self._path(kind, key)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {"features": z["features"], "ok": z["ok"], "errors": json.loads(str(z["errors"]))}
        except Exception:  # a damaged entry is rebuilt, never trusted
            return None

    def save(self, kind: str, key: str, features: np.ndarray, ok: np.ndarray, errors: list) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, features=features, ok=ok, errors=np.array(json.dumps(errors)))
            os.replace(tmp, self._path(kind, key))
        except OSError:
            pass  # a read-only cache location only costs speed; the data is already in memory
