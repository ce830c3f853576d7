"""Deterministic DDIM inversion over a batch of latents (spec §0.2–§0.4): the plain trajectory (the
first ReNoise iterate and the original null-text inversion's pivot) and the official NTI option's
t=1-start variant. Sampling back is :func:`memtui.engine.diffusion.ddim.ddim_sample`.

All latents are *scaled* (``z = s * z_vae``), shape ``[B, C, h, w]``, float32; text embeddings
``[B, L, D]``. Progress callbacks are called as ``progress(step_done, steps_total)``.
"""
from __future__ import annotations

import torch

from memtui.engine.diffusion.ddim import Progress, check_latents, ddim_step, schedule
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import alpha, alpha_prev

__all__ = ["ddim_trajectory", "ddim_invert", "ddim_trajectory_t1"]


def ddim_trajectory(pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int = 50,
                    progress: Progress | None = None, eval_at: str = "target") -> list[torch.Tensor]:
    """DDIM inversion keeping every iterate: ``[z0, z_1, z_21, …, z_981]`` (``steps + 1`` tensors
    ``[B, C, h, w]``, float32, on the model's device). For ``t`` ascending, with ``a_prev`` the
    alpha one stride below (``alphas_cumprod[0]`` at the first step):
    ``z_t = sqrt(a_t/a_prev)·z_prev + (sqrt(1−a_t) − sqrt(a_t/a_prev)·sqrt(1−a_prev))·eps(z_prev, t, c)``
    — the first iterate of ReNoise (spec §0.3), also the original null-text inversion's pivot.
    ``eval_at="current"`` reads ``eps(z_prev, t_prev)`` instead (``t_prev`` the grid's timestep below
    ``t``, 0 at the first step): the explicit Euler step, for a flow model the plain Euler step of
    its ODE."""
    if eval_at not in ("target", "current"):
        raise ValueError(f"eval_at must be 'target' or 'current', got {eval_at!r}")
    check_latents(z0, emb)
    sched, ts = schedule(pipe, steps)
    z = z0.to(pipe.device, pipe.work_dtype)
    out = [z]
    asc = list(reversed(ts))
    with torch.no_grad():
        for k, t in enumerate(asc):
            e = pipe.eps(z, t if eval_at == "target" else (asc[k - 1] if k else 0), emb)
            z = ddim_step(z, e, alpha_prev(sched, t, steps), alpha(sched, t))
            out.append(z)
            if progress is not None:
                progress(k + 1, steps)
    return out


def ddim_invert(pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int = 50,
                progress: Progress | None = None, eval_at: str = "target") -> torch.Tensor:
    """Seeds ``z_T [B, C, h, w]`` (float32) by plain DDIM inversion of scaled latents ``z0`` with text
    embeddings ``emb [B, L, D]``, conditional only (see :func:`ddim_trajectory`); ``steps`` UNet calls."""
    return ddim_trajectory(pipe, z0, emb, steps, progress, eval_at)[-1]


def ddim_trajectory_t1(pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int = 50,
                       progress: Progress | None = None) -> list[torch.Tensor]:
    """The DDIM inversion of the official code's NTI option (spec §0.4): the clean latent is taken
    to *be* the latent at the smallest timestep (t=1), then ``steps − 1`` steps 1→21→…→981 each using
    ``eps(z_cur, t_cur)`` at the *current* timestep. Returns ``[z0, z_21, …, z_981]`` (``steps``
    tensors). Differs from :func:`ddim_trajectory` (which starts below t=1 and evaluates the UNet at
    the target timestep)."""
    check_latents(z0, emb)
    sched, ts = schedule(pipe, steps)
    asc = list(reversed(ts))
    z = z0.to(pipe.device, pipe.work_dtype)
    out = [z]
    with torch.no_grad():
        for k in range(len(asc) - 1):
            t, t_next = asc[k], asc[k + 1]
            e = pipe.eps(z, t, emb)
            z = ddim_step(z, e, alpha(sched, t), alpha(sched, t_next))
            out.append(z)
            if progress is not None:
                progress(k + 1, steps - 1)
    return out
