"""THE deterministic DDIM step and sampler (eta 0), used by inversion's reconstruction, the demo's
prompt test, ESD training and the demo world's training evaluations (spec §0.2).

All latents are *scaled* (``z = s * z_vae``), shape ``[B, C, h, w]``, float32. Text embeddings are
``[B, L, D]`` (one prompt per item) or ``[1, L, D]`` (one prompt for all). Step arithmetic is float32
with coefficients computed in float64 from ``alphas_cumprod``; the UNet runs in the pipeline's dtype
(``pipe.eps`` casts). Progress callbacks are called as ``progress(step_done, steps_total)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from diffusers import DDIMScheduler

from memtui.engine.diffusion.guidance import empty_embedding, guided_eps
from memtui.engine.diffusion.noise import seed_noise
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import alpha, alpha_prev, timesteps

__all__ = ["Progress", "schedule", "ddim_step", "ddim_coefficients", "check_latents", "ddim_sample", "generate_images"]

Progress = Callable[[int, int], None]


def schedule(pipe: SDPipeline, steps: int) -> tuple[DDIMScheduler, list[int]]:
    """A fresh DDIM scheduler for ``pipe`` and its sampling timesteps, descending (981..1 for 50)."""
    sched = pipe.make_scheduler()
    return sched, [int(t) for t in timesteps(sched, steps)]


def ddim_step(z: torch.Tensor, e: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    """The deterministic DDIM map of ``z`` from noise level ``a_from`` to ``a_to`` (alphas_cumprod)
    along noise prediction ``e``: ``sqrt(a_to/a_from)·z + (sqrt(1−a_to) − sqrt(a_to/a_from)·sqrt(1−a_from))·e``.
    With ``a_to > a_from`` this is a sampling step, with ``a_to < a_from`` the exact inverse step of
    spec §0.3 (``a_from = a_prev``, ``a_to = a_t``). Returns ``[B, C, h, w]`` in float32 (float64
    when ``z`` is float64)."""
    ratio, c_e = ddim_coefficients(a_from, a_to)
    dt = torch.float64 if z.dtype == torch.float64 else torch.float32
    return ratio * z.to(dt) + c_e * e.to(dt)


def ddim_coefficients(a_from: float, a_to: float) -> tuple[float, float]:
    """``(ratio, c_e)`` of the DDIM map ``z -> ratio·z + c_e·e`` from noise level ``a_from`` to ``a_to``
    (alphas_cumprod), in float64: ``ratio = sqrt(a_to/a_from)``, ``c_e = sqrt(1−a_to) − ratio·sqrt(1−a_from)``."""
    ratio = math.sqrt(a_to / a_from)
    return ratio, math.sqrt(1.0 - a_to) - ratio * math.sqrt(1.0 - a_from)


def check_latents(z: torch.Tensor, emb: torch.Tensor) -> None:
    """ValueError unless ``z`` is ``[B, C, h, w]`` and ``emb`` is ``[B, L, D]``."""
    if z.ndim != 4:
        raise ValueError(f"latents must be [B, C, h, w], got shape {tuple(z.shape)}")
    if emb.ndim != 3 or emb.shape[0] != z.shape[0]:
        raise ValueError(f"embeddings must be [B, L, D] with B={z.shape[0]}, got shape {tuple(emb.shape)}")


@torch.no_grad()
def ddim_sample(pipe: SDPipeline, zT: torch.Tensor, emb: torch.Tensor, steps: int = 50, guidance: float = 1.0,
                uncond_emb: torch.Tensor | None = None, null_embs: torch.Tensor | None = None,
                progress: Progress | None = None, *, stop_at_t1: bool = False,
                stop: int | None = None) -> torch.Tensor:
    """Deterministic DDIM sampling (eta 0) from seeds ``zT [B, C, h, w]`` down the ``steps``
    timesteps 981 → 1, the last step going to ``alphas_cumprod[0]`` exactly as diffusers'
    ``DDIMScheduler`` with ``set_alpha_to_one=False``. Returns the latents reached, ``[B, C, h, w]``
    float32 (clean scaled latents after a full run).

    ``emb``: ``[B, L, D]`` or ``[1, L, D]``. Classifier-free guidance when ``guidance != 1``: the
    unconditional input is ``null_embs[i]`` (``[n_steps, B, L, D]``, one per sampling step, from
    null-text inversion), else ``uncond_emb`` (``[B or 1, L, D]``), else the empty prompt.
    ``stop``: take only the first ``stop`` steps (ESD's partial denoising to a random timestep);
    ``stop_at_t1=True`` is ``stop = steps − 1``: stop at the t=1 latent, matching the official NTI
    inversion (``null_embs`` then holds ``steps − 1`` entries).
    """
    if emb.ndim == 3 and emb.shape[0] == 1:
        emb = emb.expand(zT.shape[0], -1, -1)
    check_latents(zT, emb)
    sched, ts = schedule(pipe, steps)
    if stop_at_t1:
        ts = ts[:-1]
    if stop is not None:
        ts = ts[:stop]
    if guidance != 1.0:
        if null_embs is not None:
            if null_embs.ndim != 4 or null_embs.shape[0] != len(ts) or null_embs.shape[1] != zT.shape[0]:
                raise ValueError(f"null_embs must be [{len(ts)}, {zT.shape[0]}, L, D], got {tuple(null_embs.shape)}")
        elif uncond_emb is None:
            uncond_emb = empty_embedding(pipe, zT.shape[0])
    z = zT.to(pipe.device, pipe.work_dtype)
    for i, t in enumerate(ts):
        unc = null_embs[i] if (guidance != 1.0 and null_embs is not None) else uncond_emb
        e = guided_eps(pipe, z, t, emb, guidance, unc)
        z = ddim_step(z, e, alpha(sched, t), alpha_prev(sched, t, steps))
        if progress is not None:
            progress(i + 1, len(ts))
    return z


@torch.no_grad()
def generate_images(pipe: SDPipeline, prompt: str, n: int, seed: int, steps: int = 50,
                    guidance: float = 4.0, batch_size: int = 64, negative: str = "") -> torch.Tensor:
    """``n`` images ``[n, 3, H, W]`` float32 in [-1, 1] (clamped) for ``prompt``: seeds drawn in one
    block from ``seed`` (:func:`~memtui.engine.diffusion.noise.seed_noise`), DDIM with guidance
    ``guidance`` against ``negative``, sampled ``batch_size`` at a time (the demo's prompt test)."""
    z0 = seed_noise(seed, n, pipe.latent_shape())
    cond, uncond = pipe.encode_prompts([prompt]), pipe.encode_prompts([negative])
    out = []
    for zb in z0.split(batch_size):
        z = ddim_sample(pipe, zb, cond, steps, guidance, uncond_emb=uncond)
        out.append(pipe.decode_latents(z).clamp(-1, 1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, pipe.image_size, pipe.image_size)
