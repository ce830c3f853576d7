"""Devices and accelerator out-of-memory errors: which device ``auto`` means, whether an exception is
an out-of-memory error, and emptying the cache of the accelerator in use (CUDA or MPS).
Torch is imported only when a function needs it."""
from __future__ import annotations

from typing import Any

__all__ = ["resolve_device", "is_oom", "empty_cache", "OOM_MARKER"]

OOM_MARKER = "out of memory"  # in the message of every accelerator OOM RuntimeError (CUDA, MPS, HIP)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``mps``, else ``cpu``; other names unchanged."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator out-of-memory error (``torch.cuda.OutOfMemoryError``, or a
    RuntimeError whose message says "out of memory")."""
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and OOM_MARKER in str(exc).lower()


def empty_cache(device: Any = None) -> None:
    """Release the cached blocks of the accelerator ``device`` is on (``"cuda"``, ``"cuda:1"``,
    ``"mps"``, a ``torch.device``); a no-op for the CPU. ``None``: every available accelerator."""
    import torch

    kind = None if device is None else torch.device(device).type
    if kind in (None, "cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if (kind in (None, "mps") and mps is not None and hasattr(mps, "empty_cache")
            and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        mps.empty_cache()
