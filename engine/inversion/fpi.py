"""Fixed-point inversion (FPI) over a batch: each inverse DDIM step solved to convergence.

The DDIM sampling step at timestep ``t`` maps noise level ``a_t = alpha(sched, t)`` down to
``a_prev = alpha_prev(sched, t, steps)`` along ``eps(z_t, t)``; its exact inverse is the *implicit*
equation ``z_t = F(z_t)`` with ``F(z) = ddim_step(z_prev, eps(z, t), a_prev, a_t)``. Plain DDIM
inversion takes one evaluation of ``F`` at ``z_prev`` (``eps(z_prev, t)`` for ``eps(z_t, t)``); FPI
iterates it (Samuel et al.'s fixed-point inversion, ``dvirsamuel/FPI``, of which Newton–Raphson
inversion is the refinement; ReNoise is the same iteration with averaging and regularisation):

    z^0     = ddim_step(z_prev, eps(z_prev, t), a_prev, a_t)      (the plain DDIM guess)
    z^(k+1) = ddim_step(z_prev, eps(z^k, t),   a_prev, a_t)       (k = 0, 1, …; one UNet pass each)

Stopping rule, per item of the batch: after each update the residual
``r = RMS(z^(k+1) − z^k) / RMS(z^k)`` (RMS over the item's ``C·h·w`` entries; relative, so one
tolerance fits every noise level — latents have RMS ≈ 1 from t = 1 to t = 981) is compared with
``tolerance``; an item whose residual is below it stops and keeps ``z^(k+1)``; others go on, at most
``iterations`` updates per step. Only the items still running are passed through the UNet, so a
batch gives its items' single-call results. ``iterations = 0`` is plain DDIM inversion.

``eps`` is :func:`~memtui.engine.diffusion.guidance.guided_eps` at the reconstruction's guidance
(the empty prompt as unconditional input when it is not 1), so DDIM sampling from ``z_T`` at that
guidance inverts the trajectory exactly at convergence. Arithmetic in ``pipe.work_dtype``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from memtui.engine.diffusion.ddim import Progress, check_latents, ddim_step, schedule
from memtui.engine.diffusion.guidance import empty_embedding, guided_eps
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import alpha, alpha_prev

__all__ = ["FPIResult", "fpi_invert", "relative_rms"]


@dataclass
class FPIResult:
    """``z_T [B, C, h, w]`` seeds (``pipe.work_dtype``); per inversion step (t ascending, 1 → 981)
    and item, ``iterations [steps, B]`` (int64, fixed-point updates taken after the DDIM guess, at
    most ``iterations``) and ``residuals [steps, B]`` (float32, the relative residual of the last
    update, see :func:`relative_rms`; NaN where no update was taken, i.e. ``iterations = 0``). Both
    on the CPU. ``trajectory``: ``[z0, z_1, …, z_T]`` (``steps + 1`` tensors) when asked for."""

    z_T: torch.Tensor
    iterations: torch.Tensor
    residuals: torch.Tensor
    trajectory: list[torch.Tensor] | None = None


def relative_rms(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per item ``RMS(new − old) / RMS(old)`` over each item's entries, ``[B]`` (float64); the
    denominator is floored at 1e-12 so an all-zero latent gives the absolute RMS (scaled)."""
    d = (new - old).double().flatten(1).pow(2).mean(1).sqrt()
    ref = old.double().flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
    return d / ref


@torch.no_grad()
def fpi_invert(pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int = 50, iterations: int = 20,
               tolerance: float = 1e-4, guidance: float = 1.0, progress: Progress | None = None,
               trajectory: bool = False) -> FPIResult:
    """Fixed-point inversion of scaled latents ``z0 [B, C, h, w]`` with text embeddings ``emb [B, L, D]``
    over ``steps`` DDIM steps (see the module doc): per step the DDIM guess then up to ``iterations``
    fixed-point updates, each item stopping once its relative residual is below ``tolerance``
    (``tolerance = 0``: always ``iterations`` updates). ``guidance``: CFG scale of eps (1: conditional
    only, one UNet pass per evaluation; else two, against the empty prompt). UNet evaluations per item:
    ``steps + sum(iterations)`` (doubled under CFG). Progress: ``(step_done, steps)`` once per step.
    ``trajectory``: also keep every step's latent (:attr:`FPIResult.trajectory`)."""
    if iterations < 0:
        raise ValueError(f"fpi iterations must be >= 0, got {iterations!r}")
    if not tolerance >= 0:
        raise ValueError(f"fpi tolerance must be >= 0, got {tolerance!r}")
    check_latents(z0, emb)
    B = z0.shape[0]
    sched, ts = schedule(pipe, steps)
    guidance = float(guidance)
    uncond = empty_embedding(pipe, B) if guidance != 1.0 else None
    z = z0.to(pipe.device, pipe.work_dtype)
    iters = torch.zeros(steps, B, dtype=torch.int64)
    resid = torch.full((steps, B), float("nan"), dtype=torch.float32)
    traj = [z] if trajectory else None

    def eps(x: torch.Tensor, t: int, idx: torch.Tensor | None) -> torch.Tensor:
        if idx is None:
            return guided_eps(pipe, x, t, emb, guidance, uncond)
        unc = None if uncond is None else uncond[idx.to(uncond.device)]
        return guided_eps(pipe, x, t, emb[idx.to(emb.device)], guidance, unc)

    for k, t in enumerate(reversed(ts)):
        a_prev, a_t = alpha_prev(sched, t, steps), alpha(sched, t)
        z_prev = z
        z = ddim_step(z_prev, eps(z_prev, t, None), a_prev, a_t)  # z^0: the plain DDIM guess
        active = torch.arange(B, device=z.device)
        for _ in range(iterations):
            cur = z[active]
            new = ddim_step(z_prev[active], eps(cur, t, active), a_prev, a_t)
            r = relative_rms(new, cur)
            z[active] = new
            rows = active.cpu()
            iters[k, rows] += 1
            resid[k, rows] = r.float().cpu()
            keep = ~(r < tolerance)  # NaN residuals (an overflow) keep iterating
            active = active[keep.to(active.device)]
            if active.numel() == 0:
                break
        if traj is not None:
            traj.append(z)
        if progress is not None:
            progress(k + 1, steps)
    return FPIResult(z_T=z, iterations=iters, residuals=resid, trajectory=traj)
