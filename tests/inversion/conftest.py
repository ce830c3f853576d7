"""Fixtures of the inversion tests: deterministic random latents and images."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def rand_images() -> torch.Tensor:
    """Three smooth-ish random RGB images ``[3, 3, 32, 32]`` in [-1, 1] (seeded)."""
    g = torch.Generator().manual_seed(1)
    low = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def z0() -> torch.Tensor:
    """Three seeded random latents ``[3, 4, 8, 8]`` (the tiny pipeline's latent shape)."""
    return torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(7))
