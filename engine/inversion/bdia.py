"""BDIA-DDIM (Zhang, Lewis, Kleijn, "Exact diffusion inversion via bidirectional integration
approximation", ECCV 2024): a DDIM sampler that is exactly invertible, over a batch of latents.

Latents are *scaled* (``z = s·z_vae``) ``[B, C, h, w]``; text embeddings ``[B, L, D]`` (or
``[1, L, D]``); arithmetic in ``pipe.work_dtype`` (float32; float64 for a float64 model).

Notation: sampling timesteps ``ts`` descending (981 … 1 for 50 steps), ``a(t) = alphas_cumprod[t]``,
``a'(t)`` the level one DDIM stride below ``t`` (``alphas_cumprod[0]`` after the last step), and
``D(z, t → a) = ddim_step(z, eps(z, t), a(t), a)`` the DDIM map of the state ``z`` at ``t`` to level
``a``, ``eps`` the guided noise prediction (CFG against the empty prompt when ``guidance != 1``).

Sampling, state ``z_i`` at ``ts[i]``: ``z_1 = D(z_0', ts[0] → a'(ts[0]))`` (plain DDIM; here ``z_0'``
is the seed ``z_T``), then for ``i ≥ 1``::

    z_{i+1} = γ·(z_{i−1} − D(z_i, ts[i] → a(ts[i−1]))) + D(z_i, ts[i] → a'(ts[i]))

(γ = 0 is DDIM). Inversion runs the recurrence backwards exactly::

    z_{i−1} = (z_{i+1} − D(z_i, ts[i] → a'(ts[i]))) / γ + D(z_i, ts[i] → a(ts[i−1]))

from the clean latent and one plain DDIM inverse step above it, up to ``ts[0]``. The seed is the
pair ``(z_T, z_T1)`` (the states at ``ts[0]`` and ``ts[1]``); sampling from ``z_T`` with ``z_T1`` as its
first state returns the inverted latent exactly in exact arithmetic (rounding is amplified by about
``1/γ`` per inversion step).
"""
from __future__ import annotations

import torch

from memtui.engine.diffusion.ddim import Progress, check_latents, ddim_step, schedule
from memtui.engine.diffusion.guidance import empty_embedding, guided_eps
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import alpha, alpha_prev

__all__ = ["bdia_invert", "bdia_sample"]


def _prepare(pipe: SDPipeline, z: torch.Tensor, emb: torch.Tensor, guidance: float):
    if emb.ndim == 3 and emb.shape[0] == 1:
        emb = emb.expand(z.shape[0], -1, -1)
    check_latents(z, emb)
    uncond = empty_embedding(pipe, z.shape[0]) if guidance != 1.0 else None
    return z.to(pipe.device, pipe.work_dtype), emb, uncond


@torch.no_grad()
def bdia_invert(pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int = 50, gamma: float = 1.0,
                guidance: float = 1.0, progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BDIA-DDIM inversion of clean scaled latents ``z0 [B, C, h, w]`` with embeddings ``emb [B, L, D]``:
    one plain DDIM inverse step ``z_1 = D(z0, ts[-1] → a(ts[-1]))`` (eps at ``(z0, ts[-1])``, from level
    ``alphas_cumprod[0]``, as :func:`~memtui.engine.inversion.ddim.ddim_trajectory`), then for
    ``i = steps−1 … 1`` the exact inverse of the BDIA step,
    ``z_prev = (z_next − D(z_cur, ts[i] → a'(ts[i]))) / γ + D(z_cur, ts[i] → a(ts[i−1]))``.
    Returns ``(z_T, z_T1)``, the states at ``ts[0]`` and ``ts[1]``, each ``[B, C, h, w]`` in
    ``pipe.work_dtype``. ``steps ≥ 2``, ``gamma > 0``; ``steps`` UNet steps, ``progress(k, steps)``."""
    if steps < 2:
        raise ValueError(f"BDIA inversion needs steps >= 2, got {steps}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0 for BDIA inversion, got {gamma!r}")
    z, emb, uncond = _prepare(pipe, z0, emb, guidance)
    sched, ts = schedule(pipe, steps)
    t = ts[-1]
    e = guided_eps(pipe, z, t, emb, guidance, uncond)
    z_next, z_cur = z, ddim_step(z, e, alpha_prev(sched, t, steps), alpha(sched, t))
    if progress is not None:
        progress(1, steps)
    for k, i in enumerate(range(steps - 1, 0, -1), start=2):
        t = ts[i]
        e = guided_eps(pipe, z_cur, t, emb, guidance, uncond)
        a_t = alpha(sched, t)
        down = ddim_step(z_cur, e, a_t, alpha_prev(sched, t, steps))   # D(z_cur, t -> a'(t))
        up = ddim_step(z_cur, e, a_t, alpha(sched, ts[i - 1]))          # D(z_cur, t -> a(ts[i-1]))
        z_next, z_cur = z_cur, (z_next - down) / gamma + up
        if progress is not None:
            progress(k, steps)
    return z_cur, z_next


@torch.no_grad()
def bdia_sample(pipe: SDPipeline, z_T: torch.Tensor, emb: torch.Tensor, steps: int = 50, gamma: float = 1.0,
                guidance: float = 1.0, z_T1: torch.Tensor | None = None,
                progress: Progress | None = None) -> torch.Tensor:
    """BDIA-DDIM sampling from seeds ``z_T [B, C, h, w]`` at ``ts[0]`` with embeddings ``emb``
    (``[B, L, D]`` or ``[1, L, D]``) down to the clean level ``alphas_cumprod[0]``. The state at
    ``ts[1]`` is ``z_T1 [B, C, h, w]`` when given (the second part of a BDIA seed), else one plain DDIM
    step from ``z_T``; then for ``i = 1 … steps−1``
    ``z_next = γ·(z_prev − D(z_cur, ts[i] → a(ts[i−1]))) + D(z_cur, ts[i] → a'(ts[i]))``.
    ``gamma = 0`` is DDIM. Returns ``[B, C, h, w]`` in ``pipe.work_dtype``; ``steps − 1`` UNet steps
    with ``z_T1`` (else ``steps``), each reported as ``progress(k, n)``."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    z, emb, uncond = _prepare(pipe, z_T, emb, guidance)
    sched, ts = schedule(pipe, steps)
    if z_T1 is not None:
        if steps < 2:
            raise ValueError(f"sampling from a BDIA seed pair needs steps >= 2, got {steps}")
        if z_T1.shape != z_T.shape:
            raise ValueError(f"z_T1 must have the shape of z_T {tuple(z_T.shape)}, got {tuple(z_T1.shape)}")
        z_prev, z_cur = z, z_T1.to(pipe.device, pipe.work_dtype)
        n, done = steps - 1, 0
    else:
        t = ts[0]
        e = guided_eps(pipe, z, t, emb, guidance, uncond)
        z_prev, z_cur = z, ddim_step(z, e, alpha(sched, t), alpha_prev(sched, t, steps))
        n, done = steps, 1
        if progress is not None:
            progress(done, n)
    for i in range(1, steps):
        t = ts[i]
        e = guided_eps(pipe, z_cur, t, emb, guidance, uncond)
        a_t = alpha(sched, t)
        down = ddim_step(z_cur, e, a_t, alpha_prev(sched, t, steps))   # D(z_cur, t -> a'(t))
        up = ddim_step(z_cur, e, a_t, alpha(sched, ts[i - 1]))          # D(z_cur, t -> a(ts[i-1]))
        z_prev, z_cur = z_cur, gamma * (z_prev - up) + down
        done += 1
        if progress is not None:
            progress(done, n)
    return z_cur
