"""Seeded standard-normal noise, drawn on the CPU so results do not depend on the device.

Two semantics, both in use:

- *one generator per row* (:func:`initial_noise`, :func:`noise_from_generators`): row ``i`` comes
  from its own ``torch.Generator``, so a batch equals one call per row — the official dataset
  generation (``torch.manual_seed(seed)`` + ``randn`` per image) and the per-image generators of
  inversion (the official code re-seeds 42 for every image: :func:`repeated_generators`);
- *one generator for the block* (:func:`seed_noise`, :func:`noise_from_generator`): ``n`` rows
  drawn in one call from one generator — the demo world's prompt test and ESD training.

Shapes: ``shape`` is one row's ``(C, h, w)``; results are float32 ``[B, C, h, w]`` on the CPU.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["item_generators", "repeated_generators", "noise_from_generators", "initial_noise",
           "noise_from_generator", "seed_noise"]


def item_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed, ``torch.Generator().manual_seed(seed)``."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def repeated_generators(batch: int, seed: int) -> list[torch.Generator]:
    """``batch`` CPU generators all seeded ``seed`` (the official code re-seeds per image)."""
    return item_generators([seed] * batch)


def noise_from_generators(generators: Sequence[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
    """``[len(generators), *shape]`` float32, row ``i`` one ``randn`` draw from ``generators[i]``."""
    return torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in generators])


def initial_noise(seeds: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """Unscaled initial latents ``[B, *shape]``, row ``i`` drawn from
    ``torch.Generator().manual_seed(seeds[i])`` (the official CPU draw)."""
    return noise_from_generators(item_generators(seeds), shape)


def noise_from_generator(generator: torch.Generator, n: int, shape: Sequence[int]) -> torch.Tensor:
    """``[n, *shape]`` float32 drawn in one ``randn`` call from ``generator``."""
    return torch.randn((n, *shape), generator=generator, dtype=torch.float32)


def seed_noise(seed: int, n: int, shape: Sequence[int]) -> torch.Tensor:
    """``[n, *shape]`` float32 drawn in one call from ``torch.Generator().manual_seed(seed)``."""
    return noise_from_generator(torch.Generator().manual_seed(int(seed)), n, shape)
