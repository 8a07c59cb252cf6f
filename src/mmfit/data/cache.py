"""On-disk cache of decoded features: sharded, content-addressed, memory-mapped.

A file column is cut into blocks of `shard_rows` consecutive manifest rows. Each block is one
shard, keyed by the preprocessing config and the content hashes of its files, and stored as a
plain `.npy` (the features, memory-mappable) plus a small `.json` (which rows decoded, and why
the others did not). A second epoch or a second run over the same files decodes nothing; a
changed file rebuilds only its own shard; shards are independent, so several processes (or
machines sharing the cache folder) can fill them at once. Entries are written atomically: the
`.npy` first, the `.json` last, each through a temporary file and a rename, so a reader never
sees half a shard.

`ShardedArray` reads the rows of a column across its shards. File-backed shards are mapped, not
loaded: a batch reads only its rows, and the pages it mapped are dropped from the process's
memory right after, so resident memory does not grow with the size of the data set.
"""

from __future__ import annotations

import hashlib
import json
import mmap
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


def _npy_header(f, path: Path) -> tuple[tuple, np.dtype, int]:
    """-> (shape, dtype, data offset) of an open .npy file, checked against the file's length."""
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if fortran or dtype.hasobject:
        raise ValueError(f"{path}: not a C-ordered numeric array")
    offset = f.tell()
    if offset + int(np.prod(shape)) * dtype.itemsize > os.fstat(f.fileno()).st_size:
        raise ValueError(f"{path}: shorter than its header says")
    return shape, dtype, offset


def open_npy(path: Path) -> tuple[np.ndarray, Optional[mmap.mmap]]:
    """A read-only view of an .npy file through mmap -> (array, the mmap, to release pages)."""
    with open(path, "rb") as f:
        shape, dtype, offset = _npy_header(f, path)
        if int(np.prod(shape)) * dtype.itemsize == 0:
            return np.zeros(shape, dtype), None
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.ndarray(shape, dtype, buffer=mm, offset=offset), mm


class FileHashes:
    """Content hashes of files, remembered by (path, size, mtime_ns, inode) in the cache's
    `file-hashes-<host>.sqlite`: a run over files that did not change reads none of them to find its
    shards. A file whose size, modification time or inode changed is read and hashed again. One index
    per machine: SQLite's locks do not hold across the machines of a network file system, so machines
    sharing a cache folder (the ranks of a run on several) never write the same index; the shards
    themselves are written by rename and need no lock."""

    def __init__(self, directory: Path):
        import socket

        self.path = Path(directory) / f"file-hashes-{socket.gethostname() or 'local'}.sqlite"
        self.db = None

    def _open(self):
        if self.db is None:
            import sqlite3

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=60)
            self.db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
                            "mtime_ns INTEGER, inode INTEGER, sha1 TEXT)")
        return self.db

    def many(self, paths: list[Path]) -> list[str]:
        """The content hash of each file; the ones read anew are remembered before returning."""
        stats = [p.stat() for p in paths]
        known: dict = {}
        try:
            db = self._open()
            names = [str(p) for p in paths]
            for s in range(0, len(names), 500):
                chunk = names[s : s + 500]
                rows = db.execute(f"SELECT path, size, mtime_ns, inode, sha1 FROM files WHERE path IN "
                                  f"({','.join('?' * len(chunk))})", chunk).fetchall()
                known.update({r[0]: r[1:] for r in rows})
        except Exception:  # an unreadable index only costs reading the files
            known = {}
        out, new = [], []
        for p, st in zip(paths, stats):
            if p.is_dir():  # a DICOM series: its files' names and contents (a folder's mtime misses edits)
                out.append(content_hash(b"".join(f.name.encode() + bytes.fromhex(content_hash(f.read_bytes()))
                                                  for f in sorted(p.iterdir()) if f.is_file())))
                continue
            sig = (st.st_size, st.st_mtime_ns, st.st_ino)
            hit = known.get(str(p))
            if hit is not None and tuple(hit[:3]) == sig:
                out.append(hit[3])
            else:
                h = content_hash(p.read_bytes())
                new.append((str(p), *sig, h))
                out.append(h)
        if new:
            try:
                db = self._open()
                with db:
                    db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", new)
            except Exception:
                pass  # a read-only cache location: the hashes are simply computed again next time
        return out


class FeatureCache:
    def __init__(self, directory: Optional[Path]):
        self.dir = Path(directory) if directory else default_cache_dir()
        self.hashes = FileHashes(self.dir)

    def key(self, config: dict, item_keys: list[str]) -> str:
        h = hashlib.sha1(json.dumps(config, sort_keys=True).encode())
        for k in item_keys:
            h.update(k.encode())
            h.update(b"\n")
        return h.hexdigest()

    def _paths(self, kind: str, key: str) -> tuple[Path, Path]:
        base = self.dir / kind / key[:2] / key
        return base.with_suffix(".npy"), base.with_suffix(".json")

    def shard_path(self, kind: str, key: str) -> Path:
        return self._paths(kind, key)[0]

    def load(self, kind: str, key: str) -> Optional[dict]:
        """-> {"path": the shard's .npy, "ok": bool [n], "errors": [[row, reason]]} of a complete,
        undamaged shard, or None."""
        npy, meta = self._paths(kind, key)
        if not meta.exists() or not npy.exists():
            return None
        try:
            info = json.loads(meta.read_text())
            ok = np.zeros(info["rows"], bool)
            ok[info["ok"]] = True
            with open(npy, "rb") as f:
                shape, _, _ = _npy_header(f, npy)
            if shape[0] != info["rows"]:
                raise ValueError("row count differs from its metadata")
            return {"path": npy, "ok": ok, "errors": info["errors"]}
        except (OSError, ValueError, KeyError, IndexError, json.JSONDecodeError):
            return None  # a damaged entry is rebuilt, never trusted

    def save(self, kind: str, key: str, features: np.ndarray, ok: np.ndarray, errors: list) -> bool:
        """Write one shard; False when the cache cannot be written (the features stay in memory)."""
        npy, meta = self._paths(kind, key)
        try:
            npy.parent.mkdir(parents=True, exist_ok=True)
            for path, write in ((npy, lambda f: np.save(f, np.ascontiguousarray(features))),
                                (meta, lambda f: f.write(json.dumps({"rows": int(len(ok)),
                                                                     "ok": np.flatnonzero(ok).tolist(),
                                                                     "errors": errors}).encode()))):
                fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
                try:
                    with os.fdopen(fd, "wb") as f:
                        write(f)
                    os.replace(tmp, path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
            return True
        except OSError:
            return False  # a read-only cache location only costs speed

    def put(self, kind: str, key: str, features: np.ndarray, ok: np.ndarray, errors: list):
        """Save a shard -> its path to map, or the features themselves when it cannot be written."""
        return self.shard_path(kind, key) if self.save(kind, key, features, ok, errors) else features


class ShardedArray:
    """Rows of one column across shards (mapped .npy files or in-memory arrays), read by index.

    `take(idx)` gathers rows in any order into a new in-memory array. Picklable: a DataLoader
    worker reopens the mapped files instead of copying them."""

    def __init__(self, parts: list):
        """`parts`: per shard either an array or a Path to an .npy file (mapped); at least one.
        The row shape and type are the first part's."""
        self.parts = list(parts)
        opened = [open_npy(p) if isinstance(p, Path) else (p, None) for p in self.parts]
        self._arrays = [a for a, _ in opened]
        self._maps = [mm for _, mm in opened]
        self.row_shape, self.dtype = tuple(self._arrays[0].shape[1:]), self._arrays[0].dtype
        self.starts = np.concatenate([[0], np.cumsum([a.shape[0] for a in self._arrays])]).astype(np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]),) + self.row_shape

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def mapped(self) -> bool:
        return any(isinstance(p, Path) for p in self.parts)

    def take(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx),) + self.row_shape, self.dtype)
        if len(idx) == 0:
            return out
        if idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"row index out of range 0..{len(self) - 1}")
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            out[sel] = self._arrays[s][idx[sel] - self.starts[s]]
            self._drop(int(s))
        return out

    def _drop(self, i: int) -> None:
        # A read maps far more than it asks for (the kernel maps whole large folios and the pages
        # around a fault: measured 8x for random 48 KiB rows), so the pages are unmapped right
        # after each gather; they stay in the page cache, and the next read of them is a minor fault.
        mm = self._maps[i]
        if mm is not None and hasattr(mm, "madvise"):
            mm.madvise(mmap.MADV_DONTNEED)

    def release(self) -> None:
        """Unmap every page read so far from this process (they stay in the page cache)."""
        for i in range(len(self._maps)):
            self._drop(i)

    def __getstate__(self):
        return {"parts": self.parts}

    def __setstate__(self, state):
        self.__init__(state["parts"])


class RowView:
    """The rows `rows` of a ShardedArray, as a split sees them: `view[idx]` reads rows[idx]."""

    def __init__(self, base: ShardedArray, rows: np.ndarray):
        self.base, self.rows = base, np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows),) + self.base.row_shape

    @property
    def dtype(self):
        return self.base.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, slice):
            return self.base.take(self.rows[idx])
        return self.base.take(self.rows[np.asarray(idx, dtype=np.int64)])
