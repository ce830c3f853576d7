"""Classifier-free guidance: ``e_u + g·(e_c − e_u)`` of an unconditional and a conditional noise
prediction. Tensors are ``[B, C, h, w]`` (noise) and ``[B, L, D]`` (text embeddings)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from memtui.engine.model.pipeline import SDPipeline

__all__ = ["combine", "guided_eps", "empty_embedding"]


def combine(e_u: torch.Tensor, e_c: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """``e_u + scale·(e_c − e_u)``; ``scale`` a number or a per-row tensor ``[B, 1, 1, 1]``. A
    negative scale is ESD's target ``e_u − eta·(e_c − e_u)`` (``scale = −eta``)."""
    return e_u + scale * (e_c - e_u)


def guided_eps(pipe: SDPipeline, z: torch.Tensor, t: int | torch.Tensor, emb: torch.Tensor,
               guidance: float | torch.Tensor = 1.0, uncond: torch.Tensor | None = None, *,
               both: bool = False) -> torch.Tensor:
    """Noise prediction ``[B, C, h, w]`` (float32) of latents ``z [B, C, h, w]`` at timestep ``t``
    with guidance ``guidance`` (a number, or per row ``[B, 1, 1, 1]``): one UNet pass over the ``2B``
    items ``[uncond; emb]``, then :func:`combine`. A scalar ``guidance == 1`` is the conditional
    prediction alone (one pass over ``B``; ``uncond`` unused) unless ``both`` (the official sampler
    computes both branches whatever the scale). ``emb`` / ``uncond``: ``[B, L, D]`` or ``[1, L, D]``."""
    b = z.shape[0]
    emb = emb.expand(b, -1, -1)
    scalar = not isinstance(guidance, torch.Tensor)
    if scalar and guidance == 1.0 and not both:
        return pipe.eps(z, t, emb)
    if uncond is None:
        raise ValueError("guidance != 1 needs an unconditional embedding")
    dev, dt = pipe.device, pipe.dtype
    out = pipe.eps(torch.cat([z, z]), t, torch.cat([uncond.expand(b, -1, -1).to(dev, dt), emb.to(dev, dt)]))
    e_u, e_c = out.chunk(2)
    return combine(e_u, e_c, guidance)


def empty_embedding(pipe: SDPipeline, batch: int) -> torch.Tensor:
    """Embedding of the empty prompt repeated to ``[batch, L, D]`` (the usual unconditional input)."""
    return pipe.encode_prompts([""]).expand(batch, -1, -1)
