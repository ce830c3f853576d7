"""The cancel signal long computations poll: None, a ``threading.Event``-like object (``is_set``) or a
zero-argument callable. Torch-free."""
from __future__ import annotations

from typing import Any

__all__ = ["is_cancelled"]


def is_cancelled(cancel: Any) -> bool:
    """True when ``cancel`` (None, a ``threading.Event``-like object or a zero-arg callable) is set."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    if callable(cancel):
        return bool(cancel())
    return bool(cancel)
