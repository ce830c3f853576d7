"""Safe reading of weight files: safetensors via ``safetensors``; ``.pt/.bin/.ckpt/.pth`` via
``torch.load(map_location="cpu", weights_only=True)`` (memory-mapped when the file allows it).

A pickle that needs code (any global outside torch's allow-list) is refused with
:class:`UnsafeCheckpointError`; nothing from it is executed.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from memtui.engine.model.loading.errors import (CorruptCheckpointError, UnsafeCheckpointError,
                                                UnsupportedCheckpointError)

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pt", ".bin", ".ckpt", ".pth")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

# Weight file names of diffusers models and transformers models, best first.
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
TRANSFORMERS_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def is_weight_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(WEIGHT_SUFFIXES)


def _load_pickle(path: Path) -> Any:
    problem = weight_file_problem(path)
    if problem:
        raise CorruptCheckpointError(problem)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) serialisation cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeCheckpointError(
            f"refused to load {path}: this pickle needs code to unpickle, which memtui never runs "
            f"(torch.load weights_only=True said: {first}). Convert it to .safetensors in an "
            "environment you trust (load it there and save the state dict with "
            "safetensors.torch.save_file) and load that file instead."
        ) from None
    except (EOFError, RuntimeError, OSError, ValueError) as exc:
        raise CorruptCheckpointError(f"{path}: cannot read this weight file ({type(exc).__name__}: "
                                     f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None


def load_file(path: str | Path) -> Any:
    """The object stored in one weight file: a dict of tensors for safetensors; for pickles, whatever
    plain container of tensors was saved (possibly nested dicts). Tensors are on the CPU."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(SAFETENSORS_SUFFIXES):
        from safetensors.torch import load_file as st_load

        problem = weight_file_problem(path)
        if problem:
            raise CorruptCheckpointError(problem)
        try:
            return st_load(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - SafetensorError is not importable portably
            raise CorruptCheckpointError(f"{path}: cannot read this safetensors file ({exc})") from None
    if name.endswith(PICKLE_SUFFIXES):
        return _load_pickle(path)
    raise UnsupportedCheckpointError(
        f"{path}: not a weight file (expected one of {', '.join(WEIGHT_SUFFIXES)})")


def safetensors_header(path: str | Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, str]]:
    """``({key: (shape, dtype)}, metadata)`` of a safetensors file from its header alone (no tensor
    data is read, so this is cheap on multi-GB files)."""
    header = _raw_header(Path(path))
    meta = header.pop("__metadata__", None) or {}
    info = {k: (tuple(v["shape"]), str(v["dtype"])) for k, v in header.items()}
    return info, {str(k): str(v) for k, v in meta.items()}


def _raw_header(path: Path) -> dict[str, Any]:
    """The parsed JSON header of a safetensors file; :class:`UnsupportedCheckpointError` when it is
    not one, :class:`CorruptCheckpointError` when it is empty or truncated."""
    size = path.stat().st_size
    if size == 0:
        raise CorruptCheckpointError(f"{path}: the file is empty")
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if n <= 0 or n > 100_000_000:
            raise UnsupportedCheckpointError(f"{path}: not a valid safetensors file (header size {n})")
        if 8 + n > size:
            raise CorruptCheckpointError(f"{path}: truncated safetensors file (a {n}-byte header, "
                                         f"{size} bytes in all)")
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError) as exc:
            raise UnsupportedCheckpointError(f"{path}: not a valid safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise UnsupportedCheckpointError(f"{path}: not a valid safetensors file (the header is not an object)")
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise UnsupportedCheckpointError(f"{path}: not a valid safetensors file (bad tensor entries)") from None
    if 8 + n + end > size:
        raise CorruptCheckpointError(f"{path}: truncated safetensors file ({size} bytes on disk, its header "
                                     f"describes {8 + n + end})")
    return header


def weight_file_problem(path: str | Path) -> str | None:
    """Why the weight file at ``path`` cannot be loaded (empty, truncated safetensors, a broken zip
    archive), or None; cheap: reads headers only."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return f"{path}: the file is empty"
        if path.name.lower().endswith(SAFETENSORS_SUFFIXES):
            _raw_header(path)
        elif path.name.lower().endswith(PICKLE_SUFFIXES):
            with open(path, "rb") as fh:
                magic = fh.read(4)
            if magic.startswith(b"PK") and not zipfile.is_zipfile(path):
                return f"{path}: truncated or damaged checkpoint (a zip archive that cannot be read)"
    except (UnsupportedCheckpointError, CorruptCheckpointError) as exc:
        return str(exc)
    except OSError as exc:
        return f"{path}: cannot read ({exc.strerror or exc})"
    return None


def folder_weight_files(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """The weight files of a diffusers/transformers model folder: the first of ``names`` present,
    else its shards (``<name>.index.json`` weight map), else an ``fp16`` variant (``x.fp16.ext``).
    Empty when there is none."""
    for name in names:
        if (folder / name).is_file():
            return [folder / name]
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / s for s in shards]
    for name in names:
        stem, ext = name.rsplit(".", 1)
        variant = folder / f"{stem}.fp16.{ext}"
        if variant.is_file():
            return [variant]
    return []


def iter_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Flatten nested dicts of tensors into ``(dotted_key, tensor)`` pairs (non-tensors skipped)."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from iter_tensors(v, f"{prefix}.{k}" if prefix else str(k))


def file_size(path: Path) -> int:
    """Bytes on disk of a file, or of every file under a folder (symlinks followed)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
