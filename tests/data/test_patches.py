"""Patch scrambling: exact inversion for several grids and seeds, patch placement against a
hand-written loop, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from memtui.engine.data.patches import (check_divisible, inverse_permutation, patch_permutation,
                                    scramble, unscramble)


def _loop_scramble(img: np.ndarray, grid: int, perm: np.ndarray) -> np.ndarray:
    """Reference: [C, H, W] -> output patch k (row-major) = input patch perm[k]."""
    c, h, w = img.shape
    ph, pw = h // grid, w // grid
    out = np.empty_like(img)
    for k, src in enumerate(perm):
        r, q = divmod(k, grid)
        sr, sq = divmod(int(src), grid)
        out[:, r * ph:(r + 1) * ph, q * pw:(q + 1) * pw] = img[:, sr * ph:(sr + 1) * ph, sq * pw:(sq + 1) * pw]
    return out


@pytest.mark.parametrize("grid", [1, 2, 4, 8])
@pytest.mark.parametrize("seed", [0, 1, 42])
def test_roundtrip_and_placement(grid: int, seed: int) -> None:
    rng = np.random.default_rng(seed + 100)
    x = rng.integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
    perm = patch_permutation(grid, seed)
    assert sorted(perm.tolist()) == list(range(grid * grid))
    y = scramble(x, grid, perm)
    np.testing.assert_array_equal(y[1], _loop_scramble(x[1], grid, perm))
    np.testing.assert_array_equal(unscramble(y, grid, perm), x)
    # torch, float, channel-first
    t = torch.from_numpy(x).float() / 127.5 - 1
    assert torch.equal(unscramble(scramble(t, grid, perm), grid, perm), t)
    # numpy HWC (a PNG as loaded)
    hwc = x[0].transpose(1, 2, 0)
    s = scramble(hwc, grid, perm, channels_last=True)
    np.testing.assert_array_equal(s, _loop_scramble(x[0], grid, perm).transpose(1, 2, 0))
    np.testing.assert_array_equal(unscramble(s, grid, perm, channels_last=True), hwc)


def test_permutation_seeded_and_not_identity() -> None:
    assert np.array_equal(patch_permutation(4, 7), patch_permutation(4, 7))
    assert not np.array_equal(patch_permutation(4, 7), patch_permutation(4, 8))
    assert not np.array_equal(patch_permutation(4, 7), np.arange(16))
    p = patch_permutation(4, 3)
    inv = inverse_permutation(p)
    np.testing.assert_array_equal(p[inv], np.arange(16))


def test_errors() -> None:
    with pytest.raises(ValueError, match="divisible by 3"):
        check_divisible(32, 32, 3)
    with pytest.raises(ValueError, match="divisible"):
        scramble(np.zeros((3, 30, 32)), 4, patch_permutation(4, 0))
    with pytest.raises(ValueError, match="permutation"):
        inverse_permutation([0, 0, 1])
    with pytest.raises(ValueError, match="entries"):
        scramble(np.zeros((3, 32, 32)), 4, np.arange(4))
