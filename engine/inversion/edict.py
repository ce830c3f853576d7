"""EDICT: exact inversion with coupled transformations (Wallace et al., CVPR 2023, arXiv 2211.12446,
Sec. 3.2). Two latents ``x``, ``y`` are carried together; each DDIM step updates one with the noise
prediction of the other, then a mixing layer with weight ``p`` couples them. Every part is an affine
map of one latent given the other, so the whole step inverts exactly in closed form (no fixed-point
iteration); with the same noise prediction in both directions, invert-then-sample returns the clean
latent up to rounding.

Per sampling step at timestep ``t`` (``a, b = ddim_coefficients(alpha(t), alpha_prev(t))``, the DDIM
map ``z -> a·z + b·eps``; ``eps = guided_eps(·, t)`` at the given CFG scale)::

    x_i = a·x + b·eps(y)        y_i = a·y + b·eps(x_i)
    x'  = p·x_i + (1−p)·y_i     y'  = p·y_i + (1−p)·x'

and its inverse (ascending ``t``)::

    y_i = (y' − (1−p)·x')/p     x_i = (x' − (1−p)·y_i)/p
    y   = (y_i − b·eps(x_i))/a  x   = (x_i − b·eps(y))/a

``leapfrog=True`` follows the official code's alternation: on odd sampling steps (0-based from
``T``) ``y`` is updated first (``y_i = a·y + b·eps(x)``, ``x_i = a·x + b·eps(y_i)``); the mixing
layer is unchanged. Inversion starts from ``x = y = z0``; sampling returns ``(x_0, y_0)``, and ``x_0``
is the reconstruction (as the official code and BELM's EDICT return it).

Latents are scaled, ``[B, C, h, w]``, in :attr:`SDPipeline.work_dtype` (float32, float64 for a
float64 model); text embeddings ``[B, L, D]`` (or ``[1, L, D]`` for all items). Each step costs two
noise predictions (four UNet items per latent with CFG).
"""
from __future__ import annotations

import torch

from memtui.engine.diffusion.ddim import Progress, check_latents, ddim_coefficients, schedule
from memtui.engine.diffusion.guidance import empty_embedding, guided_eps
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import alpha, alpha_prev

__all__ = ["edict_invert", "edict_sample", "edict_step", "edict_step_inverse", "edict_coefficients"]


def edict_coefficients(pipe: SDPipeline, steps: int) -> list[tuple[int, float, float]]:
    """``(t, a, b)`` of each sampling step of a ``steps``-step grid, in sampling order (981 → 1 for
    50): the DDIM map from ``alpha(t)`` to ``alpha_prev(t)`` (``alphas_cumprod[0]`` at the last)."""
    sched, ts = schedule(pipe, steps)
    return [(t, *ddim_coefficients(alpha(sched, t), alpha_prev(sched, t, steps))) for t in ts]


def _eps(pipe: SDPipeline, z: torch.Tensor, t: int, emb: torch.Tensor, guidance: float,
         uncond: torch.Tensor | None) -> torch.Tensor:
    return guided_eps(pipe, z, t, emb, guidance, uncond).to(z.dtype)


def edict_step(pipe: SDPipeline, x: torch.Tensor, y: torch.Tensor, t: int, a: float, b: float, emb: torch.Tensor,
               p: float, guidance: float = 1.0, uncond: torch.Tensor | None = None,
               swap: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One EDICT sampling step of ``(x, y)`` (each ``[B, C, h, w]``) at timestep ``t`` with DDIM
    coefficients ``a, b`` and mixing weight ``p``; ``swap``: update ``y`` first (a leapfrog odd
    step). ``uncond [B, L, D]`` is needed when ``guidance != 1``. Returns ``(x', y')``."""
    if swap:
        y_i = a * y + b * _eps(pipe, x, t, emb, guidance, uncond)
        x_i = a * x + b * _eps(pipe, y_i, t, emb, guidance, uncond)
    else:
        x_i = a * x + b * _eps(pipe, y, t, emb, guidance, uncond)
        y_i = a * y + b * _eps(pipe, x_i, t, emb, guidance, uncond)
    x_new = p * x_i + (1.0 - p) * y_i
    y_new = p * y_i + (1.0 - p) * x_new
    return x_new, y_new


def edict_step_inverse(pipe: SDPipeline, x_new: torch.Tensor, y_new: torch.Tensor, t: int, a: float, b: float,
                       emb: torch.Tensor, p: float, guidance: float = 1.0, uncond: torch.Tensor | None = None,
                       swap: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact inverse of :func:`edict_step` with the same arguments: ``(x, y)`` from ``(x', y')``."""
    y_i = (y_new - (1.0 - p) * x_new) / p
    x_i = (x_new - (1.0 - p) * y_i) / p
    if swap:
        x = (x_i - b * _eps(pipe, y_i, t, emb, guidance, uncond)) / a
        y = (y_i - b * _eps(pipe, x, t, emb, guidance, uncond)) / a
    else:
        y = (y_i - b * _eps(pipe, x_i, t, emb, guidance, uncond)) / a
        x = (x_i - b * _eps(pipe, y, t, emb, guidance, uncond)) / a
    return x, y


def _prepare(pipe: SDPipeline, z: torch.Tensor, emb: torch.Tensor, p: float,
             guidance: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    if emb.ndim == 3 and emb.shape[0] == 1:
        emb = emb.expand(z.shape[0], -1, -1)
    check_latents(z, emb)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p!r}")
    uncond = empty_embedding(pipe, z.shape[0]) if guidance != 1.0 else None
    return emb, uncond


@torch.no_grad()
def edict_invert(pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int = 50, p: float = 0.93,
                 guidance: float = 1.0, progress: Progress | None = None, *,
                 leapfrog: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """EDICT inversion of scaled clean latents ``z0 [B, C, h, w]`` (at level ``alphas_cumprod[0]``)
    with embeddings ``emb [B or 1, L, D]`` at CFG scale ``guidance`` (empty-prompt unconditional
    branch), over the ``steps`` sampling steps in ascending ``t``, from ``x = y = z0``. Returns
    ``(x_T, y_T)``, each ``[B, C, h, w]`` in ``pipe.work_dtype``; ``2·steps`` noise predictions,
    ``progress(k, steps)`` after each step."""
    emb, uncond = _prepare(pipe, z0, emb, p, guidance)
    x = z0.to(pipe.device, pipe.work_dtype)
    y = x.clone()
    coefs = edict_coefficients(pipe, steps)
    for k, i in enumerate(reversed(range(steps))):
        t, a, b = coefs[i]
        x, y = edict_step_inverse(pipe, x, y, t, a, b, emb, p, guidance, uncond, swap=leapfrog and i % 2 == 1)
        if progress is not None:
            progress(k + 1, steps)
    return x, y


@torch.no_grad()
def edict_sample(pipe: SDPipeline, x_T: torch.Tensor, y_T: torch.Tensor, emb: torch.Tensor, steps: int = 50,
                 p: float = 0.93, guidance: float = 1.0, progress: Progress | None = None, *,
                 leapfrog: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """EDICT sampling of the latent pair ``(x_T, y_T)`` (each ``[B, C, h, w]``) down the ``steps``
    timesteps 981 → 1 to ``alphas_cumprod[0]``, with embeddings ``emb [B or 1, L, D]`` at CFG scale
    ``guidance``. Returns ``(x_0, y_0)`` in ``pipe.work_dtype`` (``x_0`` is the reconstruction);
    ``progress(i, steps)`` after each step. Exactly undoes :func:`edict_invert` (same ``p``,
    ``guidance``, ``leapfrog``) up to rounding."""
    if x_T.shape != y_T.shape:
        raise ValueError(f"x_T and y_T must have the same shape, got {tuple(x_T.shape)} and {tuple(y_T.shape)}")
    emb, uncond = _prepare(pipe, x_T, emb, p, guidance)
    x = x_T.to(pipe.device, pipe.work_dtype)
    y = y_T.to(pipe.device, pipe.work_dtype)
    for i, (t, a, b) in enumerate(edict_coefficients(pipe, steps)):
        x, y = edict_step(pipe, x, y, t, a, b, emb, p, guidance, uncond, swap=leapfrog and i % 2 == 1)
        if progress is not None:
            progress(i + 1, steps)
    return x, y
