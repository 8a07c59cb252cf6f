"""Writing a run's files so that a reader never sees half of one: safetensors and any text or bytes
through a temporary file and a rename, folders through a temporary sibling; and what names or sizes
tensors and files."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

import torch
from safetensors.torch import save_file


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors through a temp file + fsync + rename: a kill leaves the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: Path, content: Union[str, bytes]) -> None:
    """Write text or bytes beside `path`, then rename over it: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(content, bytes):
        tmp.write_bytes(content)
    else:
        tmp.write_text(content)
    tmp.replace(path)


def atomic_copytree(src: Path, dst: Path, ignore: tuple[str, ...] = ()) -> None:
    """Copy a folder to `dst` (which must not exist) through a temporary sibling and one rename:
    `dst` is either complete or absent."""
    dst = Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst} already exists; choose another path")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*ignore) if ignore else None)
        tmp.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # shared tensors (tied embeddings) would be rejected by safetensors: clone each entry
    return {k: v.clone() for k, v in model.state_dict().items()}


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """A hash of named tensors: names, types, shapes and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def size_mb(path: Path) -> float:
    return round(Path(path).stat().st_size / 1e6, 3)
