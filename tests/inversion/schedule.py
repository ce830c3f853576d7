"""SD 1.4's noise schedule, computed independently of diffusers, for the inversion tests' hand
computations."""
from __future__ import annotations

import numpy as np
import torch


def sd14_alphas_cumprod(float32: bool = False) -> np.ndarray:
    """alphas_cumprod of SD 1.4 ("scaled_linear" betas 0.00085 -> 0.012, 1000 steps) as float64;
    ``float32``: computed in float32 as diffusers' schedulers hold it (float64 betas differ by ~1e-6
    relative)."""
    if float32:
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
        return torch.cumprod(1.0 - betas, dim=0).double().numpy()
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)
