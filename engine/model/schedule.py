"""The DDIM noise schedule of Stable Diffusion 1.4 and the timesteps the paper's code walks.

With 1000 train steps and 50 inference steps ("leading" spacing, ``steps_offset=1``) the
timesteps are 981, 961, ..., 21, 1 (stride 20). ``set_alpha_to_one=False`` makes the alpha
"before t=1" equal ``alphas_cumprod[0]`` (spec §0.2).
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers import DDIMScheduler

SD14_DDIM_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

# Keys of a pipeline's scheduler config that define the noise schedule; everything else
# (class name, PNDM-only options) is ignored when a DDIM scheduler is built from it.
_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                  "steps_offset", "prediction_type")


def make_ddim(config: dict[str, Any] | None = None) -> DDIMScheduler:
    """A DDIM scheduler with the schedule of ``config`` (a pipeline's scheduler config) or SD 1.4's,
    forced to ``clip_sample=False``, ``set_alpha_to_one=False``, "leading" spacing, eta 0."""
    cfg = dict(SD14_DDIM_CONFIG)
    if config:
        cfg.update({k: config[k] for k in _SCHEDULE_KEYS if k in config and config[k] is not None})
    cfg.update(clip_sample=False, set_alpha_to_one=False, timestep_spacing="leading")
    return DDIMScheduler(**cfg)


def timesteps(scheduler: DDIMScheduler, steps: int) -> torch.Tensor:
    """Sampling timesteps, descending (e.g. 981..1 for 50 steps), as int64 tensor of shape [steps]."""
    if steps < 1 or steps > scheduler.config.num_train_timesteps:
        raise ValueError(f"steps must be in 1..{scheduler.config.num_train_timesteps}, got {steps}")
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.clone()


def alpha_prev(scheduler: DDIMScheduler, t: int, steps: int) -> torch.Tensor:
    """alphas_cumprod of the timestep one DDIM stride before ``t`` (``alphas_cumprod[0]`` at the
    first step, since ``set_alpha_to_one=False``). Scalar fp64 tensor."""
    stride = scheduler.config.num_train_timesteps // steps
    prev = t - stride
    ac = scheduler.alphas_cumprod.double()
    return ac[prev] if prev >= 0 else ac[0]
