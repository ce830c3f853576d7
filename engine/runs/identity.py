"""What model files a run was computed with, cheaply: a resumed run checks that its base model and
ablated checkpoint are still the same files, so it never mixes records of two models (same path,
new weights: a retrained checkpoint, a re-downloaded snapshot, a demo world replaced by a newer one).

The identity of a weights file is its size and a SHA-256 of ``BLOCKS`` blocks of ``BLOCK`` bytes at
evenly spaced offsets (first and last included): fine-tuned weights change every block, and reading
1 MiB of a 3.4 GB UNet takes milliseconds even on a network filesystem. A folder's identity joins
those of its weight files (by relative path). Modification times are not used: a copy or checkout
keeps the identity. Torch-free.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["model_identity", "model_identities", "identity_changes", "WEIGHT_SUFFIXES"]

BLOCK = 64 * 1024
BLOCKS = 16
MAX_DEPTH = 3
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx")


def _file_digest(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= BLOCK * BLOCKS:
            h.update(f.read())
        else:
            for i in range(BLOCKS):
                f.seek((size - BLOCK) * i // (BLOCKS - 1))
                h.update(f.read(BLOCK))
    return h.hexdigest()


def _weight_files(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        depth = len(Path(root).relative_to(folder).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
        out += [Path(root) / f for f in sorted(files) if f.endswith(WEIGHT_SUFFIXES)]
    return out


def model_identity(path: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """``{"digest", "bytes", "files"}`` of a weights file or of the weight files in a folder
    (symlinks followed, as loaders do); None for an unset path, a model id that is not a local
    path, or files that cannot be read (nothing to check then)."""
    if not path:
        return None
    p = Path(os.path.expanduser(str(path)))
    try:
        if p.is_file():
            files = [p]
            rel = [p.name]
        elif p.is_dir():
            files = _weight_files(p)
            rel = [str(f.relative_to(p)) for f in files]
        else:
            return None
        h = hashlib.sha256()
        total = 0
        for r, f in zip(rel, files):
            size = f.stat().st_size
            total += size
            h.update(f"{r}\0{size}\0{_file_digest(f, size)}\n".encode())
    except OSError:
        return None
    return {"digest": h.hexdigest()[:32], "bytes": total, "files": len(files)}


def model_identities(spec: Any) -> dict[str, Any]:
    """``{"base": identity, "ablated": identity}`` of a RunSpec's model files (those that are local
    paths)."""
    ids = {k: model_identity(getattr(spec, k, None)) for k in ("base", "ablated")}
    return {k: v for k, v in ids.items() if v is not None}


def identity_changes(stored: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The models (``base``, ``ablated``) whose identity was recorded in ``stored`` and differs
    ``now``; a model without an identity on either side is not compared."""
    out = {}
    for k in sorted(set(stored) & set(now)):
        a, b = stored.get(k), now.get(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping) and a.get("digest") != b.get("digest"):
            out[k] = (dict(a), dict(b))
    return out
