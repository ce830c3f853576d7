"""The DDIM noise schedule of Stable Diffusion 1.4 and the timesteps the paper's code walks.

With 1000 train steps and 50 inference steps ("leading" spacing, ``steps_offset=1``) the
timesteps are 981, 961, ..., 21, 1 (stride 20). ``set_alpha_to_one=False`` makes the alpha
"before t=1" equal ``alphas_cumprod[0]`` (spec §0.2).
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers import DDIMScheduler

__all__ = ["SD14_DDIM_CONFIG", "SCHEDULE_KEYS", "noise_schedule", "make_ddim", "timesteps", "alpha", "alpha_prev"]

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

# The keys of a pipeline's scheduler config that define its noise schedule (the one list). Everything
# else (class name, PNDM-only options, timestep spacing) belongs to a sampler, not to the model.
# ``prediction_type`` is the model's, not the schedule's: ``SDPipeline.eps`` converts a v-prediction
# to ε, so every scheduler memtui builds is given ε ("epsilon", the default of SD14_DDIM_CONFIG).
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")


def noise_schedule(config: dict[str, Any] | None) -> dict[str, Any]:
    """The noise-schedule entries (:data:`SCHEDULE_KEYS`) of a scheduler ``config`` that are set."""
    return {k: config[k] for k in SCHEDULE_KEYS if k in config and config[k] is not None} if config else {}


def make_ddim(config: dict[str, Any] | None = None) -> DDIMScheduler:
    """A DDIM scheduler with the noise schedule of ``config`` (a pipeline's scheduler config) or
    SD 1.4's, forced to ``clip_sample=False``, ``set_alpha_to_one=False``, "leading" spacing, eta 0.
    The timestep grid also follows the model's ``steps_offset`` (1 for SD 1.x: 981..1, not 980..0),
    as the official code builds DDIM from the model's own scheduler config."""
    cfg = dict(SD14_DDIM_CONFIG)
    cfg.update(noise_schedule(config))
    if config and config.get("steps_offset") is not None:
        cfg["steps_offset"] = config["steps_offset"]
    cfg.update(clip_sample=False, set_alpha_to_one=False, timestep_spacing="leading")
    return DDIMScheduler(**cfg)


def timesteps(scheduler: DDIMScheduler, steps: int) -> torch.Tensor:
    """Sampling timesteps, descending (e.g. 981..1 for 50 steps), as int64 tensor of shape [steps]."""
    if steps < 1 or steps > scheduler.config.num_train_timesteps:
        raise ValueError(f"steps must be in 1..{scheduler.config.num_train_timesteps}, got {steps}")
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.clone()


def alpha(scheduler: DDIMScheduler, t: int) -> float:
    """``alphas_cumprod[t]`` as a Python float (computed in float64)."""
    return float(scheduler.alphas_cumprod[t].double())


def alpha_prev(scheduler: DDIMScheduler, t: int, steps: int) -> float:
    """alphas_cumprod of the timestep one DDIM stride before ``t`` of a ``steps``-step grid
    (``alphas_cumprod[0]`` at the first step, since ``set_alpha_to_one=False``), as a float64 float."""
    stride = scheduler.config.num_train_timesteps // steps
    prev = t - stride
    return float(scheduler.alphas_cumprod.double()[prev if prev >= 0 else 0])
