"""One-call inversion + reconstruction for the run layer.

``invert_images`` encodes images ``[B, 3, H, W]`` in [-1, 1], inverts (DDIM / ReNoise / null-text),
reconstructs by DDIM sampling with the same number of steps and decodes. ``invert_latents`` starts
from scaled latents (the SIB "direct" path).

Progress: ``progress(done, total)`` counts diffusion steps over all phases: inversion (``steps``),
NTI optimisation (``steps``; NTI only) and reconstruction (``steps``); official NTI uses ``steps − 1``
per phase. Decoding is not counted.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import torch

from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.inversion.ddim import ddim_invert, ddim_sample, empty_embedding
from memtui.engine.inversion.nti import nti_invert
from memtui.engine.inversion.renoise import RenoiseConfig, default_generators, renoise_invert

Progress = Callable[[int, int], None]
METHODS = ("ddim", "renoise", "nti")
ENCODES = ("mean", "sample", "auto")
NTI_MODES = ("paper", "official")
DECODE_CHUNK = 8


@dataclass
class InversionConfig:
    """How to invert: ``method`` ddim | renoise | nti; ``steps`` DDIM steps (50 → timesteps 981..1);
    ``seed`` seeds one CPU generator per item (``Generator("cpu").manual_seed(seed)``: the official
    code re-seeds 42 for every image); ``encode`` mean | sample | auto (= sample for renoise, as
    official, mean for ddim/nti); ``renoise`` knobs; ``nti_mode`` paper | official; ``guidance``:
    reconstruction CFG for ddim/renoise (official 1.0); ``nti_guidance`` CFG of null-text inversion
    and of its reconstruction (official mode reconstructs at 1.0 regardless); ``nti_inner_steps``
    (None: 10 paper, ``steps`` official)."""

    method: str = "renoise"
    steps: int = 50
    seed: int = 42
    encode: str = "auto"
    renoise: RenoiseConfig = field(default_factory=RenoiseConfig)
    nti_mode: str = "paper"
    guidance: float = 1.0
    nti_guidance: float = 7.5
    nti_inner_steps: int | None = None

    @property
    def resolved_encode(self) -> str:
        """``"mean"`` or ``"sample"`` after resolving ``"auto"``."""
        if self.encode != "auto":
            return self.encode
        return "sample" if self.method == "renoise" else "mean"

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 2 <= self.steps <= 1000:
            raise ValueError(f"steps must be an integer in 2..1000, got {self.steps!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.encode not in ENCODES:
            raise ValueError(f"encode must be one of {', '.join(ENCODES)}, got {self.encode!r}")
        if self.nti_mode not in NTI_MODES:
            raise ValueError(f"nti_mode must be one of {', '.join(NTI_MODES)}, got {self.nti_mode!r}")
        for name in ("guidance", "nti_guidance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{name} must be a number, got {v!r}")
        n = self.nti_inner_steps
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError(f"nti_inner_steps must be a non-negative integer or null, got {n!r}")
        if not isinstance(self.renoise, RenoiseConfig):
            raise ValueError("renoise must be a RenoiseConfig")
        self.renoise.validate()

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["renoise"] = self.renoise.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InversionConfig":
        """Build from a dict (e.g. a run spec's JSON); unknown keys or bad values raise ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"inversion config must be a mapping, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown inversion option(s): {', '.join(unknown)}")
        kw = dict(d)
        if "renoise" in kw:
            r = kw["renoise"]
            kw["renoise"] = r if isinstance(r, RenoiseConfig) else RenoiseConfig.from_dict(r)
        if isinstance(kw.get("guidance"), int) and not isinstance(kw.get("guidance"), bool):
            kw["guidance"] = float(kw["guidance"])
        cfg = cls(**kw)
        cfg.validate()
        return cfg


@dataclass
class InversionOutput:
    """``z_0`` scaled clean latents that were inverted, ``z_T`` seeds, ``z_0_hat`` reconstructed
    latents (all ``[B, C, h, w]`` float32); ``images_hat [B, 3, H, W]`` float32 in [-1, 1] (decoded,
    clamped); ``extras``: ``{"null_embs": [n, B, L, D], "nti_losses": [n, B]}`` for NTI."""

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
    """Encode images ``[B, 3, H, W]`` in [-1, 1] (posterior mean, or a posterior sample from each
    item's generator), invert with ``prompts`` and reconstruct. With ReNoise and sample encoding the
    official draw order is kept: the posterior sample, then two unused ``randn`` draws of the latent
    shape (the img2img ``prepare_latents`` noise and the pipe's ``noise``), then ReNoise's roll draws."""
    config.validate()
    if images.ndim != 4 or images.shape[0] != len(prompts):
        raise ValueError(f"need images [B, 3, H, W] and one prompt per image; got {tuple(images.shape)} "
                         f"and {len(prompts)} prompts")
    gens = default_generators(images.shape[0], config.seed)
    if config.resolved_encode == "sample":
        z0 = pipe.encode_images(images, sample=True, generators=gens)
        if config.method == "renoise":
            for g in gens:
                for _ in range(2):
                    torch.randn(z0.shape[1:], generator=g, dtype=torch.float32)
    else:
        z0 = pipe.encode_images(images)
    return invert_latents(pipe, z0, prompts, config, progress, generators=gens)


def invert_latents(pipe: SDPipeline, z0: torch.Tensor, prompts: Sequence[str], config: InversionConfig,
                   progress: Progress | None = None,
                   generators: Sequence[torch.Generator] | None = None) -> InversionOutput:
    """Invert scaled latents ``z0 [B, C, h, w]`` with one prompt per item and reconstruct.
    ``generators`` (ReNoise only): one per item; default fresh ones seeded ``config.seed``."""
    config.validate()
    B = z0.shape[0]
    if z0.ndim != 4 or B != len(prompts):
        raise ValueError(f"need latents [B, C, h, w] and one prompt per item; got {tuple(z0.shape)} "
                         f"and {len(prompts)} prompts")
    steps = config.steps
    z0 = z0.to(pipe.device, torch.float32)
    emb = pipe.encode_prompts(list(prompts))
    extras: dict[str, torch.Tensor] = {}
    if config.method == "nti":
        n = steps if config.nti_mode == "paper" else steps - 1
        total = 3 * n
        res = nti_invert(pipe, z0, emb, steps, mode=config.nti_mode, guidance=config.nti_guidance,
                         inner_steps=config.nti_inner_steps, progress=_phase(progress, 0, total))
        z_T = res.z_T
        extras["null_embs"] = res.null_embs
        if res.losses is not None:
            extras["nti_losses"] = res.losses
        z0_hat = ddim_sample(pipe, z_T, emb, steps, guidance=res.guidance, null_embs=res.null_embs,
                             progress=_phase(progress, 2 * n, total), stop_at_t1=res.stop_at_t1)
    else:
        total = 2 * steps
        if config.method == "ddim":
            z_T = ddim_invert(pipe, z0, emb, steps, progress=_phase(progress, 0, total))
        else:
            gens = list(generators) if generators is not None else default_generators(B, config.seed)
            z_T = renoise_invert(pipe, z0, emb, steps, config.renoise, gens, progress=_phase(progress, 0, total))
        uncond = empty_embedding(pipe, B) if config.guidance != 1.0 else None
        z0_hat = ddim_sample(pipe, z_T, emb, steps, guidance=config.guidance, uncond_emb=uncond,
                             progress=_phase(progress, steps, total))
    return InversionOutput(z_0=z0, z_T=z_T, z_0_hat=z0_hat, images_hat=decode(pipe, z0_hat), extras=extras)
