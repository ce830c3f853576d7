"""One-call inversion + reconstruction for the run layer, generic over the method registry:
encode → ``registry[method].invert`` → the shared DDIM reconstruction → decode.

``invert_images`` encodes images ``[B, 3, H, W]`` in [-1, 1] (posterior mean or a posterior sample
from each item's generator, as the method's default or ``config.encode``), ``invert_latents`` starts
from scaled latents ``[B, C, h, w]`` (the SIB "direct" path). Reconstruction samples with the same
number of steps, following the method's :class:`~memtui.engine.inversion.base.Inverted` recipe.

Progress: ``progress(done, total)`` counts diffusion steps over the method's phases
(:meth:`~memtui.engine.inversion.base.InversionMethod.phases`; the reconstruction is the last).
Decoding is not counted.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from memtui.engine.diffusion.ddim import Progress, ddim_sample
from memtui.engine.diffusion.noise import noise_from_generators, repeated_generators
from memtui.engine.inversion.config import InversionConfig
from memtui.engine.inversion.registry import get_method
from memtui.engine.model.pipeline import SDPipeline

__all__ = ["InversionConfig", "InversionOutput", "invert_images", "invert_latents", "decode", "DECODE_CHUNK"]

DECODE_CHUNK = 8


@dataclass
class InversionOutput:
    """``z_0`` scaled clean latents that were inverted, ``z_T`` seeds, ``z_0_hat`` reconstructed
    latents (all ``[B, C, h, w]`` float32); ``images_hat [B, 3, H, W]`` float32 in [-1, 1] (decoded,
    clamped); ``extras``: the method's tensors, for NTI ``{"null_embs": [n, B, L, D], "nti_losses": [n, B]}``."""

    z_0: torch.Tensor
    z_T: torch.Tensor
    z_0_hat: torch.Tensor
    images_hat: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def _phase(progress: Progress | None, offset: int, total: int) -> Progress | None:
    if progress is None:
        return None
    return lambda done, _n: progress(offset + done, total)


@torch.no_grad()
def decode(pipe: SDPipeline, z: torch.Tensor, chunk: int = DECODE_CHUNK) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` float32 in [-1, 1] (clamped) from scaled latents, decoded in chunks."""
    return torch.cat([pipe.decode_latents(z[i:i + chunk]).clamp(-1, 1) for i in range(0, z.shape[0], chunk)])


def invert_images(pipe: SDPipeline, images: torch.Tensor, prompts: Sequence[str], config: InversionConfig,
                  progress: Progress | None = None) -> InversionOutput:
    """Encode images ``[B, 3, H, W]`` in [-1, 1] (posterior mean, or a posterior sample drawn from
    each item's generator ``Generator("cpu").manual_seed(config.seed)``), invert with ``prompts`` and
    reconstruct. After a sample encoding the method may consume further draws (ReNoise: two unused
    ``randn`` of the latent shape, the official img2img order) before inverting."""
    config.validate()
    if images.ndim != 4 or images.shape[0] != len(prompts):
        raise ValueError(f"need images [B, 3, H, W] and one prompt per image; got {tuple(images.shape)} "
                         f"and {len(prompts)} prompts")
    gens = repeated_generators(images.shape[0], config.seed)
    if config.resolved_encode == "sample":
        f = pipe.vae_scale
        shape = (pipe.latent_channels, images.shape[2] // f, images.shape[3] // f)
        z0 = pipe.encode_images(images, noise=noise_from_generators(gens, shape))
        get_method(config.method)().after_sample_encode(gens, shape)
    else:
        z0 = pipe.encode_images(images)
    return invert_latents(pipe, z0, prompts, config, progress, generators=gens)


def invert_latents(pipe: SDPipeline, z0: torch.Tensor, prompts: Sequence[str], config: InversionConfig,
                   progress: Progress | None = None,
                   generators: Sequence[torch.Generator] | None = None) -> InversionOutput:
    """Invert scaled latents ``z0 [B, C, h, w]`` with one prompt per item and reconstruct.
    ``generators``: one CPU generator per item for methods that draw (ReNoise); default fresh ones
    seeded ``config.seed``."""
    config.validate()
    B = z0.shape[0]
    if z0.ndim != 4 or B != len(prompts):
        raise ValueError(f"need latents [B, C, h, w] and one prompt per item; got {tuple(z0.shape)} "
                         f"and {len(prompts)} prompts")
    method = get_method(config.method)()
    steps = config.steps
    phases = method.phases(steps, config.options)
    total = sum(phases)
    z0 = z0.to(pipe.device, torch.float32)
    emb = pipe.encode_prompts(list(prompts))
    gens = list(generators) if generators is not None else repeated_generators(B, config.seed)
    inv = method.invert(pipe, z0, emb, steps, config.options, gens, config.guidance,
                        progress=_phase(progress, 0, total))
    z0_hat = ddim_sample(pipe, inv.z_T, emb, steps, guidance=inv.guidance, null_embs=inv.null_embs,
                         progress=_phase(progress, total - phases[-1], total), stop_at_t1=inv.stop_at_t1)
    return InversionOutput(z_0=z0, z_T=inv.z_T, z_0_hat=z0_hat, images_hat=decode(pipe, z0_hat),
                           extras=dict(inv.extras))
