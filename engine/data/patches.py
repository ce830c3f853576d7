"""Patch scrambling for the paper's limitations test: cut an image into ``grid x grid`` square
patches, shuffle them with a seeded permutation, and put them back with the inverse permutation.

Convention: patches are numbered row-major (patch ``k`` is row ``k // grid``, column ``k % grid``).
``scramble(x, perm)`` puts input patch ``perm[k]`` at output position ``k``; ``unscramble`` undoes
it exactly (pure data movement, no arithmetic). Works on torch tensors or numpy arrays laid out
``[..., C, H, W]`` (channel-first, any leading dims), or ``[H, W, C]`` / ``[H, W]`` numpy images
with ``channels_last=True``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Array = torch.Tensor | np.ndarray


def patch_permutation(grid: int, seed: int) -> np.ndarray:
    """A permutation of ``grid*grid`` patch indices (int64 ``[grid*grid]``) drawn from
    ``numpy.random.default_rng(seed)``; deterministic for ``(grid, seed)``."""
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}")
    return np.random.default_rng(seed).permutation(grid * grid).astype(np.int64)


def inverse_permutation(perm: Sequence[int] | np.ndarray) -> np.ndarray:
    """``inv`` with ``inv[perm[k]] = k``; ValueError if ``perm`` is not a permutation of 0..n-1."""
    p = np.asarray(perm, dtype=np.int64)
    if p.ndim != 1 or not np.array_equal(np.sort(p), np.arange(p.size)):
        raise ValueError("perm must be a permutation of 0..n-1")
    inv = np.empty_like(p)
    inv[p] = np.arange(p.size)
    return inv


def check_divisible(height: int, width: int, grid: int) -> None:
    """ValueError unless an ``height x width`` image splits into ``grid x grid`` equal patches."""
    if grid < 1 or height % grid or width % grid:
        raise ValueError(f"image of {height}x{width} pixels does not split into a {grid}x{grid} grid "
                         f"of equal patches (the side must be divisible by {grid})")


def _permute_patches(x: Array, grid: int, order: np.ndarray, channels_last: bool) -> Array:
    """Output patch ``k`` = input patch ``order[k]``."""
    is_np = isinstance(x, np.ndarray)
    t = torch.from_numpy(np.array(x, copy=True)) if is_np else x
    if channels_last:
        if t.ndim == 2:
            t = t[..., None]
            squeeze = True
        else:
            squeeze = False
        t = t.movedim(-1, -3)
    h, w = t.shape[-2], t.shape[-1]
    check_divisible(h, w, grid)
    if order.size != grid * grid:
        raise ValueError(f"permutation has {order.size} entries, a {grid}x{grid} grid needs {grid * grid}")
    ph, pw = h // grid, w // grid
    lead = t.shape[:-2]
    # [..., g, ph, g, pw] -> [..., g*g, ph, pw]
    p = t.reshape(*lead, grid, ph, grid, pw).movedim(-3, -2).reshape(*lead, grid * grid, ph, pw)
    p = p[..., torch.as_tensor(order), :, :]
    out = p.reshape(*lead, grid, grid, ph, pw).movedim(-2, -3).reshape(*lead, h, w)
    if channels_last:
        out = out.movedim(-3, -1)
        if squeeze:
            out = out[..., 0]
    return out.contiguous().numpy() if is_np else out.contiguous()


def scramble(x: Array, grid: int, perm: Sequence[int] | np.ndarray, channels_last: bool = False) -> Array:
    """Shuffle the ``grid x grid`` patches of ``x``: output patch ``k`` = input patch ``perm[k]``."""
    return _permute_patches(x, grid, np.asarray(perm, dtype=np.int64), channels_last)


def unscramble(x: Array, grid: int, perm: Sequence[int] | np.ndarray, channels_last: bool = False) -> Array:
    """Inverse of :func:`scramble` for the same ``grid`` and ``perm``."""
    return _permute_patches(x, grid, inverse_permutation(perm), channels_last)
