"""The only conversions between images as tensors in [-1, 1] and images as uint8 pixels.

Tensors are float ``[B, 3, H, W]`` / ``[3, H, W]`` in [-1, 1]; pixel arrays are uint8
``[B, H, W, 3]`` / ``[H, W, 3]`` (RGB, channels last).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["to_uint8", "uint8_to_tensor"]


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float ``[B, 3, H, W]`` (or ``[3, H, W]``) in [-1, 1] -> uint8 ``[B, H, W, 3]`` (or
    ``[H, W, 3]``) as diffusers' postprocess: in float32, ``(x/2 + 0.5).clamp(0, 1)``, × 255,
    rounded half to even. Values outside [-1, 1] saturate."""
    x = torch.as_tensor(images).detach().to("cpu", torch.float32)
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected [B, 3, H, W] or [3, H, W], got {tuple(x.shape)}")
    x = (x / 2 + 0.5).clamp(0, 1)
    arr = x.movedim(-3, -1).numpy()
    return (arr * 255).round().astype(np.uint8)


def uint8_to_tensor(pixels: np.ndarray | Any) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` (or ``[H, W, 3]``) -> float32 ``[B, 3, H, W]`` (or ``[3, H, W]``) in
    [-1, 1]: ``x / 127.5 − 1`` in float32 (exact inverse of :func:`to_uint8` up to rounding)."""
    arr = np.ascontiguousarray(np.asarray(pixels))
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError(f"expected uint8 [B, H, W, 3] or [H, W, 3], got {arr.shape}")
    if not arr.flags.writeable:  # e.g. np.asarray(PIL image); torch wants a writable buffer
        arr = arr.copy()
    x = torch.from_numpy(arr).float() / 127.5 - 1.0
    return x.movedim(-1, -3).contiguous()
