"""One-call inversion + reconstruction for the run layer, generic over the method registry:
encode → ``registry[method].invert`` → the shared DDIM reconstruction → decode.

``invert_images`` encodes images ``[B, 3, H, W]`` in [-1, 1] (posterior mean or a posterior sample
from each item's generator, as the method's default or ``config.encode``), ``invert_latents`` starts
from scaled latents ``[B, C, h, w]`` (the SIB "direct" path). Reconstruction samples with the same
number of steps, following the method's :class:`~memtui.engine.inversion.base.Inverted` recipe.

Every call also makes the *seed-only* reconstruction (plain DDIM from ``z_T`` alone with the prompt
at ``config.guidance``, no other state; ``images_seed_only``), the paper's "likely seed under the
model's own sampler"; for methods whose reconstruction already is that, it is not recomputed.

Progress: ``progress(done, total)`` counts diffusion steps over :func:`call_phases` (the method's
phases, its reconstruction last, then the seed-only reconstruction when separate). Decoding is not
counted.
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

__all__ = ["InversionConfig", "InversionOutput", "invert_images", "invert_latents", "call_phases", "decode",
           "DECODE_CHUNK"]

DECODE_CHUNK = 8


@dataclass
class InversionOutput:
    """``z_0`` scaled clean latents that were inverted, ``z_T`` seeds, ``z_0_hat`` the method's
    reconstructed latents (all ``[B, C, h, w]`` float32); ``images_hat [B, 3, H, W]`` float32 in
    [-1, 1] (decoded, clamped); ``images_seed_only``: the same from plain DDIM sampling of ``z_T``
    alone (the seed-only reconstruction; the very tensor ``images_hat`` when the method's
    reconstruction already is that); ``state``: the seed's further parts (EDICT ``y_T``, BDIA's
    second state), ``[B, C, h, w]`` each; ``extras``: the method's other tensors, for NTI
    ``{"null_embs": [n, B, L, D], "nti_losses": [n, B]}``."""

    z_0: torch.Tensor
    z_T: torch.Tensor
    z_0_hat: torch.Tensor
    images_hat: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    images_seed_only: torch.Tensor | None = None

    def seed_parts(self) -> dict[str, torch.Tensor]:
        """The seed as the method defines it: ``{"z_T": ..., **state}`` (each ``[B, C, h, w]``)."""
        return {"z_T": self.z_T, **self.state}


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
    separate = type(method).seed_only_separate(config.options)
    total = sum(call_phases(config))
    z0 = z0.to(pipe.device, pipe.work_dtype)
    emb = pipe.encode_prompts(list(prompts))
    gens = list(generators) if generators is not None else repeated_generators(B, config.seed)
    inv = method.invert(pipe, z0, emb, steps, config.options, gens, config.guidance,
                        progress=_phase(progress, 0, total))
    rec_at = sum(phases) - phases[-1]
    z0_hat = method.reconstruct(pipe, inv, emb, steps, config.options, progress=_phase(progress, rec_at, total))
    images_hat = decode(pipe, z0_hat)
    if separate or not method.reconstructs_from_seed_alone(inv, config.guidance):
        z_seed = ddim_sample(pipe, inv.z_T, emb, steps, guidance=config.guidance,
                             progress=_phase(progress, sum(phases), total) if separate else None)
        images_seed_only = decode(pipe, z_seed)
    else:
        images_seed_only = images_hat
    f32 = torch.float32
    return InversionOutput(z_0=z0.to(f32), z_T=inv.z_T.to(f32), z_0_hat=z0_hat.to(f32), images_hat=images_hat,
                           extras=dict(inv.extras), state={k: v.to(f32) for k, v in inv.state.items()},
                           images_seed_only=images_seed_only)


def call_phases(config: InversionConfig) -> tuple[int, ...]:
    """Diffusion steps counted by each progress phase of one :func:`invert_latents` call: the method's
    phases (its reconstruction last), then ``steps`` of the seed-only reconstruction when it differs
    from the method's own (:meth:`~memtui.engine.inversion.base.InversionMethod.seed_only_separate`)."""
    cls = get_method(config.method)
    phases = tuple(cls().phases(config.steps, config.options))
    return phases + ((config.steps,) if cls.seed_only_separate(config.options) else ())
