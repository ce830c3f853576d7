"""Deterministic DDIM inversion and sampling over a batch of latents (spec §0.2–§0.4).

All latents are *scaled* (``z = s * z_vae``), shape ``[B, C, h, w]``, float32. Text embeddings are
``[B, L, D]`` (one prompt per item). Step arithmetic is float32 with coefficients computed in float64
from ``alphas_cumprod``; the UNet runs in the pipeline's dtype (``pipe.eps`` casts).

Progress callbacks are called as ``progress(step_done, steps_total)`` counting diffusion steps.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from diffusers import DDIMScheduler

from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import alpha_prev, timesteps

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- schedule helpers
def schedule(pipe: SDPipeline, steps: int) -> tuple[DDIMScheduler, list[int]]:
    """A fresh DDIM scheduler for ``pipe`` and its sampling timesteps, descending (981..1 for 50)."""
    sched = pipe.make_scheduler()
    return sched, [int(t) for t in timesteps(sched, steps)]


def alpha(sched: DDIMScheduler, t: int) -> float:
    """``alphas_cumprod[t]`` as a Python float (float64)."""
    return float(sched.alphas_cumprod[t].double())


def alpha_before(sched: DDIMScheduler, t: int, steps: int) -> float:
    """alphas_cumprod one DDIM stride before ``t`` (``alphas_cumprod[0]`` before the first step)."""
    return float(alpha_prev(sched, t, steps))


def ddim_move(z: torch.Tensor, e: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """The deterministic DDIM map of ``z`` from noise level ``a_from`` to ``a_to`` (alphas_cumprod)
    along noise prediction ``e``: ``sqrt(a_to/a_from)·z + (sqrt(1−a_to) − sqrt(a_to/a_from)·sqrt(1−a_from))·e``.
    With ``a_to > a_from`` this is a sampling step, with ``a_to < a_from`` the exact inverse step of
    spec §0.3 (``a_from = a_prev``, ``a_to = a_t``). Returns float32."""
    ratio = math.sqrt(a_to / a_from)
    c_e = math.sqrt(1.0 - a_to) - ratio * math.sqrt(1.0 - a_from)
    return ratio * z.float() + c_e * e.float()


def _check(z: torch.Tensor, emb: torch.Tensor) -> None:
    if z.ndim != 4:
        raise ValueError(f"latents must be [B, C, h, w], got shape {tuple(z.shape)}")
    if emb.ndim != 3 or emb.shape[0] != z.shape[0]:
        raise ValueError(f"embeddings must be [B, L, D] with B={z.shape[0]}, got shape {tuple(emb.shape)}")


def guided_eps(pipe: SDPipeline, z: torch.Tensor, t: int, emb: torch.Tensor, guidance: float = 1.0,
               uncond: torch.Tensor | None = None) -> torch.Tensor:
    """Noise prediction ``[B, C, h, w]`` (float32) with classifier-free guidance
    ``e_u + guidance·(e_c − e_u)`` in one UNet pass over ``2B`` items; conditional only when
    ``guidance == 1`` (``uncond`` is then not used)."""
    if guidance == 1.0:
        return pipe.eps(z, t, emb)
    if uncond is None:
        raise ValueError("guidance != 1 needs an unconditional embedding")
    dt = pipe.dtype
    out = pipe.eps(torch.cat([z, z]), t, torch.cat([uncond.to(pipe.device, dt), emb.to(pipe.device, dt)]))
    e_u, e_c = out.chunk(2)
    return e_u + guidance * (e_c - e_u)


def empty_embedding(pipe: SDPipeline, batch: int) -> torch.Tensor:
    """Embedding of the empty prompt repeated to ``[batch, L, D]`` (the usual unconditional input)."""
    return pipe.encode_prompts([""]).expand(batch, -1, -1)


# --------------------------------------------------------------------------- inversion
def ddim_trajectory(pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int = 50,
                    progress: Progress | None = None) -> list[torch.Tensor]:
    """DDIM inversion keeping every iterate: ``[z0, z_1, z_21, …, z_981]`` (``steps + 1`` tensors
    ``[B, C, h, w]``, float32, on the model's device). For ``t`` ascending, with ``a_prev`` the
    alpha one stride below (``alphas_cumprod[0]`` at the first step):
    ``z_t = sqrt(a_t/a_prev)·z_prev + (sqrt(1−a_t) − sqrt(a_t/a_prev)·sqrt(1−a_prev))·eps(z_prev, t, c)``
    — the first iterate of ReNoise (spec §0.3), also the original null-text inversion's pivot."""
    _check(z0, emb)
    sched, ts = schedule(pipe, steps)
    z = z0.to(pipe.device, torch.float32)
    out = [z]
    with torch.no_grad():
        for k, t in enumerate(reversed(ts)):
            e = pipe.eps(z, t, emb)
            z = ddim_move(z, e, alpha_before(sched, t, steps), alpha(sched, t))
            out.append(z)
            if progress is not None:
                progress(k + 1, steps)
    return out


def ddim_invert(pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int = 50,
                progress: Progress | None = None) -> torch.Tensor:
    """Seeds ``z_T [B, C, h, w]`` (float32) by plain DDIM inversion of scaled latents ``z0`` with text
    embeddings ``emb [B, L, D]``, conditional only (see :func:`ddim_trajectory`); ``steps`` UNet calls."""
    return ddim_trajectory(pipe, z0, emb, steps, progress)[-1]


def ddim_trajectory_t1(pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int = 50,
                       progress: Progress | None = None) -> list[torch.Tensor]:
    """The DDIM inversion of the official code's NTI option (spec §0.4): the clean latent is taken
    to *be* the latent at the smallest timestep (t=1), then ``steps − 1`` steps 1→21→…→981 each using
    ``eps(z_cur, t_cur)`` at the *current* timestep. Returns ``[z0, z_21, …, z_981]`` (``steps``
    tensors). Differs from :func:`ddim_trajectory` (which starts below t=1 and evaluates the UNet at
    the target timestep)."""
    _check(z0, emb)
    sched, ts = schedule(pipe, steps)
    asc = list(reversed(ts))
    z = z0.to(pipe.device, torch.float32)
    out = [z]
    with torch.no_grad():
        for k in range(len(asc) - 1):
            t, t_next = asc[k], asc[k + 1]
            e = pipe.eps(z, t, emb)
            z = ddim_move(z, e, alpha(sched, t), alpha(sched, t_next))
            out.append(z)
            if progress is not None:
                progress(k + 1, steps - 1)
    return out


# --------------------------------------------------------------------------- sampling
@torch.no_grad()
def ddim_sample(pipe: SDPipeline, zT: torch.Tensor, emb: torch.Tensor, steps: int = 50, guidance: float = 1.0,
                uncond_emb: torch.Tensor | None = None, null_embs: torch.Tensor | None = None,
                progress: Progress | None = None, *, stop_at_t1: bool = False) -> torch.Tensor:
    """Deterministic DDIM sampling (eta 0) from seeds ``zT [B, C, h, w]`` down the timesteps
    981 → 1, the last step going to ``alphas_cumprod[0]`` exactly as diffusers' ``DDIMScheduler``
    with ``set_alpha_to_one=False``. Returns clean scaled latents ``[B, C, h, w]`` (float32).

    Classifier-free guidance when ``guidance != 1``: the unconditional input is ``null_embs[i]``
    (``[n_steps, B, L, D]``, one per sampling step, from null-text inversion), else ``uncond_emb``
    (``[B, L, D]``), else the empty prompt. ``stop_at_t1=True`` stops at the t=1 latent (skips the
    final step), matching :func:`ddim_trajectory_t1`; ``null_embs`` then holds ``steps − 1`` entries.
    """
    _check(zT, emb)
    sched, ts = schedule(pipe, steps)
    if stop_at_t1:
        ts = ts[:-1]
    if guidance != 1.0:
        if null_embs is not None:
            if null_embs.ndim != 4 or null_embs.shape[0] != len(ts) or null_embs.shape[1] != zT.shape[0]:
                raise ValueError(f"null_embs must be [{len(ts)}, {zT.shape[0]}, L, D], got {tuple(null_embs.shape)}")
        elif uncond_emb is None:
            uncond_emb = empty_embedding(pipe, zT.shape[0])
    z = zT.to(pipe.device, torch.float32)
    for i, t in enumerate(ts):
        unc = null_embs[i] if (guidance != 1.0 and null_embs is not None) else uncond_emb
        e = guided_eps(pipe, z, t, emb, guidance, unc)
        z = ddim_move(z, e, alpha(sched, t), alpha_before(sched, t, steps))
        if progress is not None:
            progress(i + 1, len(ts))
    return z
