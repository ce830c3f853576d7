"""Deterministic DDIM (eta 0) sampling with classifier-free guidance for any :class:`SDPipeline`.

Latents are scaled latents ``[B, C, h, w]`` float32; seeds are drawn on the CPU from one
``torch.Generator`` so results do not depend on the device.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import timesteps


def seed_noise(pipe: SDPipeline, n: int, seed: int) -> torch.Tensor:
    """``n`` standard-normal seeds ``[n, C, h, w]`` (float32, CPU) from ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn((n, *pipe.latent_shape()), generator=g, dtype=torch.float32)


def cfg_eps(pipe: SDPipeline, z: torch.Tensor, t: int | torch.Tensor, cond: torch.Tensor,
            uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Guided noise prediction ``eps_u + g (eps_c - eps_u)`` ``[B, C, h, w]``; ``cond``/``uncond``
    are embeddings ``[B, L, D]`` or ``[1, L, D]`` (broadcast)."""
    b = z.shape[0]
    cond, uncond = cond.expand(b, -1, -1), uncond.expand(b, -1, -1)
    if guidance == 1.0:
        return pipe.eps(z, t, cond)
    e = pipe.eps(torch.cat([z, z]), t, torch.cat([uncond, cond]))
    eu, ec = e.chunk(2)
    return eu + guidance * (ec - eu)


@torch.no_grad()
def ddim_sample(pipe: SDPipeline, z: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
                steps: int = 50, guidance: float = 4.0, stop: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Run DDIM from seeds ``z`` (at the first timestep) for ``steps`` steps (or only the first
    ``stop`` of them); returns the latents reached ``[B, C, h, w]`` float32."""
    sched = pipe.make_scheduler()
    ts = timesteps(sched, steps)
    z = z.float().to(pipe.device)
    n = len(ts) if stop is None else stop
    for i, t in enumerate(ts[:n]):
        e = cfg_eps(pipe, z, t, cond, uncond, guidance)
        z = sched.step(e, t, z).prev_sample.float()
        if progress is not None:
            progress(i + 1, n)
    return z


@torch.no_grad()
def generate_images(pipe: SDPipeline, prompt: str, n: int, seed: int, steps: int = 50,
                    guidance: float = 4.0, batch_size: int = 64, negative: str = "") -> torch.Tensor:
    """``n`` images ``[n, 3, H, W]`` float32 in [-1, 1] (clamped) for ``prompt`` from seeded noise."""
    z0 = seed_noise(pipe, n, seed)
    cond, uncond = pipe.encode_prompts([prompt]), pipe.encode_prompts([negative])
    out = []
    for zb in z0.split(batch_size):
        z = ddim_sample(pipe, zb, cond, uncond, steps, guidance)
        out.append(pipe.decode_latents(z).clamp(-1, 1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, pipe.image_size, pipe.image_size)
