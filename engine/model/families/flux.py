"""Flux.1 (dev, schnell): a flow-matching transformer on 16-channel VAE latents packed in 2×2
patches, read through T5 token states and CLIP's pooled embedding, with distilled guidance (dev).

**Flow matching as an ε-model.** Flux is trained on ``x_σ = (1 − σ)·x₀ + σ·ε`` and predicts the
velocity ``v = ε − x₀``. Scaled by ``r(σ) = √((1 − σ)² + σ²)`` this is a variance-preserving
diffusion: ``x_σ / r = √ᾱ·x₀ + √(1 − ᾱ)·ε`` with ``√ᾱ = (1 − σ)/r``, and ``ε = x_σ + (1 − σ)·v``.
:class:`FluxPipeline` presents Flux that way: ``eps(z, t, emb)`` takes the VP latent ``z = x_σ / r``
at timestep ``t`` (σ = the shifted ``t / 1000``) and returns ε; ``make_scheduler`` holds the
matching ``alphas_cumprod``. One DDIM step of that ε-model *is* one Euler step of the flow ODE
(``x_σ' = x_σ + (σ' − σ)·v``, exactly: ``tests/families/test_flux.py`` checks it against an
independent Euler integration), so DDIM inversion integrates the flow ODE backwards from the image
latent to the noise, and every inversion method (ReNoise, NTI, EDICT, BDIA, fixed-point) runs
unchanged. At σ ≈ 1 the VP latent is the flow latent (``r → 1``): the seed is the initial noise
in Flux's own unpacked shape ``[16, H/8, W/8]``, its NLL against N(0, I) of that dimension.

**The σ grid.** ``σ(t) = s·u / (1 + (s − 1)·u)``, ``u = t / 1000``, with Flux's shift ``s``: the
scheduler's ``shift`` (schnell: 1), or for dynamic shifting (dev) ``exp(μ)`` with μ interpolated
from the image's token count (:func:`flow_shift`): μ = 1.15, s ≈ 3.16 at the native 1024 px; a run
sets its ``--image-size`` with :meth:`FluxPipeline.use_image_size`, as FluxPipeline shifts for the
size it generates. Generation (sampler ``flow_euler``) uses FluxPipeline's own schedule.

**Conditioning.** One tensor per prompt ``[B, L + 1, D]``: T5's last hidden states (``L`` =
``max_sequence_length``, 512) then CLIP's pooled output padded to ``D`` (4096), as SDXL packs its
pooled embedding. The empty prompt is encoded, not zeroed (Flux has no negative-prompt training).
Distilled guidance (``guidance_embeds``) is :attr:`FluxPipeline.embedded_guidance` on every call;
a method's classifier-free guidance scale is true CFG on top (1 = one pass, the default).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from memtui.engine.model.families.base import Family, Shapes
from memtui.engine.model.families.conditioning import pack_pooled, unpack_hidden, unpack_pooled
from memtui.engine.model.families.registry import register
from memtui.engine.model.families.sd import load_sd_components, write_sd_folder
from memtui.engine.model.loading.components import load_component, require_components, scheduler_config
from memtui.engine.model.loading.keys import looks_like_flux_transformer
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import make_ddim

__all__ = ["Flux", "FluxPipeline", "FLOW_SCHEDULER_KEYS", "flow_shift", "shifted_sigma", "pack_latents",
           "unpack_latents", "FLUX_DEFAULT_SCHEDULER"]

# The scheduler-config keys that define a flow-matching schedule (FlowMatchEulerDiscreteScheduler).
FLOW_SCHEDULER_KEYS = ("num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift", "max_shift",
                       "base_image_seq_len", "max_image_seq_len", "time_shift_type")
# FLUX.1-dev's scheduler config (schnell: shift 1.0, no dynamic shifting).
FLUX_DEFAULT_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}
TRAIN_STEPS = 1000


def flow_shift(config: Mapping[str, Any], image_seq_len: int) -> float:
    """The multiplicative shift ``s`` of ``σ = s·u / (1 + (s − 1)·u)`` for a scheduler ``config``
    and an image of ``image_seq_len`` packed tokens: ``exp(μ)`` (``μ`` linear in the token count
    between ``base_shift`` at ``base_image_seq_len`` and ``max_shift`` at ``max_image_seq_len``, as
    diffusers' ``calculate_shift``) under dynamic shifting, else ``shift``."""
    if not config.get("use_dynamic_shifting"):
        return float(config.get("shift", 1.0))
    lo, hi = float(config.get("base_shift", 0.5)), float(config.get("max_shift", 1.15))
    n0, n1 = float(config.get("base_image_seq_len", 256)), float(config.get("max_image_seq_len", 4096))
    mu = lo + (hi - lo) / (n1 - n0) * (image_seq_len - n0)
    return mu if config.get("time_shift_type", "exponential") == "linear" else math.exp(mu)


def shifted_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """``σ = s·u / (1 + (s − 1)·u)`` elementwise (float64 in, float64 out)."""
    return shift * u / (1 + (shift - 1) * u)


def pack_latents(z: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, (h/2)(w/2), 4C]``: 2×2 latent patches as tokens (FluxPipeline's order)."""
    b, c, h, w = z.shape
    if h % 2 or w % 2:
        raise ValueError(f"Flux latents need an even height and width, got {h}x{w}")
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`pack_latents`: ``[B, (h/2)(w/2), 4C]`` -> ``[B, C, h, w]``."""
    b, _, d = x.shape
    return x.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Rotary position ids ``[(h/2)(w/2), 3]`` of the packed tokens: (0, row, column)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


@dataclass
class FluxPipeline(SDPipeline):
    """Flux.1 as an ε-model (module docstring). ``unet`` holds the ``FluxTransformer2DModel``;
    ``scheduler_config`` is the base's flow-matching scheduler config."""

    text_encoder_2: Any = None  # transformers T5EncoderModel
    tokenizer_2: Any = None
    max_sequence_length: int = 512
    embedded_guidance: float = 3.5  # distilled guidance (FLUX.1-dev); unused without guidance_embeds
    native_size: int = 1024
    _sigma_shift: float | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ declaration
    @property
    def is_flow(self) -> bool:
        return True

    @property
    def prediction_type(self) -> str:
        return "flow"

    @property
    def image_size(self) -> int:
        return self.native_size

    @property
    def size_multiple(self) -> int:
        return 2 * self.vae_scale

    @property
    def pooled_dim(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    def component_modules(self) -> dict[str, torch.nn.Module]:
        return {"transformer": self.unet, "vae": self.vae, "text_encoder": self.text_encoder,
                "text_encoder_2": self.text_encoder_2}

    def tokenizers(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "tokenizer_2": self.tokenizer_2}

    # ------------------------------------------------------------------ the σ grid
    @property
    def sigma_shift(self) -> float:
        """The shift ``s`` of the inversion grid (:func:`flow_shift` at the size set by
        :meth:`use_image_size`, else the native size)."""
        if self._sigma_shift is None:
            self.use_image_size(self.native_size)
        return self._sigma_shift

    def use_embedded_guidance(self, guidance: float | None) -> bool:
        """FLUX.1-dev's guidance embedding reads ``guidance`` (None: 3.5); schnell has none."""
        if guidance is not None:
            self.embedded_guidance = float(guidance)
        return bool(self.unet.config.guidance_embeds)

    def use_image_size(self, px: int) -> None:
        """Shift the inversion grid for ``px × px`` images, as FluxPipeline shifts its schedule for
        that size (dynamic shifting; a fixed shift does not depend on it)."""
        side = int(px) // self.size_multiple
        self._sigma_shift = flow_shift(self.scheduler_config, side * side)

    def sigma_at(self, t: int | float | torch.Tensor, batch: int) -> torch.Tensor:
        """σ at timestep(s) ``t`` (0..1000) as ``[B, 1, 1, 1]`` float64."""
        u = torch.as_tensor(t, dtype=torch.float64).reshape(-1).cpu().clamp(0, TRAIN_STEPS) / TRAIN_STEPS
        s = shifted_sigma(u, self.sigma_shift)
        return (s.expand(batch) if s.numel() == 1 else s).reshape(batch, 1, 1, 1)

    def alpha_at(self, t: int | float | torch.Tensor, batch: int) -> torch.Tensor:
        s = self.sigma_at(t, batch)
        return (1 - s) ** 2 / ((1 - s) ** 2 + s ** 2)

    def make_scheduler(self) -> Any:
        """A DDIM scheduler (memtui's grid: leading spacing, offset 1) whose ``alphas_cumprod``
        ``[1000]`` (float64) is ᾱ(σ(t)): ``alphas_cumprod[0] = 1`` is the clean latent."""
        sched = make_ddim({"num_train_timesteps": TRAIN_STEPS, "steps_offset": 1})
        sched.alphas_cumprod = self.alpha_at(torch.arange(TRAIN_STEPS), TRAIN_STEPS).flatten()
        sched.final_alpha_cumprod = sched.alphas_cumprod[0]
        return sched

    def timestep_kwargs(self, steps: int, height: int, width: int) -> dict[str, Any]:
        """``set_timesteps`` arguments of the flow sampler for ``height × width`` images, as
        FluxPipeline sets them: σ from 1 to 1/steps, μ from the packed token count."""
        import numpy as np

        tokens = (height // self.size_multiple) * (width // self.size_multiple)
        kw: dict[str, Any] = {"sigmas": np.linspace(1.0, 1 / steps, steps)}
        if self.scheduler_config.get("use_dynamic_shifting"):
            shift = flow_shift(self.scheduler_config, tokens)
            kw["mu"] = shift if self.scheduler_config.get("time_shift_type") == "linear" else math.log(shift)
        return kw

    # ------------------------------------------------------------------ text
    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Packed conditioning ``[B, L + 1, D]``: T5 last hidden states ``[B, L, D]`` then CLIP's
        pooled output ``[B, P]`` zero-padded to D."""
        clip = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length,
                              return_tensors="pt").input_ids.to(self.device)
        pooled = self.text_encoder(clip, output_hidden_states=False).pooler_output
        length = min(self.max_sequence_length, int(getattr(self.tokenizer_2, "model_max_length", 10 ** 6)))
        t5 = self.tokenizer_2(prompts, padding="max_length", truncation=True, max_length=length,
                              return_tensors="pt").input_ids.to(self.device)
        hidden = self.text_encoder_2(t5, output_hidden_states=False)[0]
        return pack_pooled(hidden, pooled.to(hidden.dtype))

    # ------------------------------------------------------------------ the transformer
    def velocity(self, z: torch.Tensor, sigma: torch.Tensor, emb: torch.Tensor,
                 guidance: float | torch.Tensor | None = None) -> torch.Tensor:
        """The transformer's velocity ``v ≈ ε − x₀`` ``[B, 16, h, w]`` (:attr:`work_dtype`) at the
        *flow* latents ``z [B, 16, h, w]``, noise levels ``sigma [B]`` (0..1) and conditioning
        ``emb [B, L + 1, D]``; ``guidance`` (a number or ``[B]``) is the distilled guidance,
        default :attr:`embedded_guidance`."""
        b, _, h, w = z.shape
        dev, dt = self.device, self.dtype
        emb = emb.expand(b, -1, -1)
        hidden = unpack_hidden(emb).to(dev, dt)
        g = None
        if self.unet.config.guidance_embeds:
            g = torch.as_tensor(self.embedded_guidance if guidance is None else guidance, dtype=torch.float32)
            g = g.reshape(-1).expand(b).to(dev) if g.numel() == 1 else g.reshape(b).to(dev)
        out = self.unet(hidden_states=pack_latents(z.to(dev, dt)),
                        timestep=torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(b).to(dev, dt),
                        guidance=g, pooled_projections=unpack_pooled(emb, self.pooled_dim).to(dev, dt),
                        encoder_hidden_states=hidden, txt_ids=torch.zeros(hidden.shape[1], 3, device=dev, dtype=dt),
                        img_ids=image_ids(h, w, dev, dt), return_dict=False)[0]
        return unpack_latents(out, h, w).to(self.work_dtype)

    def eps(self, z: torch.Tensor, t: int | torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """ε ``[B, 16, h, w]`` of the VP latents ``z`` at timestep ``t``: ``x = r(σ)·z``,
        ``ε = x + (1 − σ)·v(x, σ)``."""
        wd = self.work_dtype
        sigma = self.sigma_at(t, z.shape[0]).to(z.device)
        r = ((1 - sigma) ** 2 + sigma ** 2).sqrt()
        x = z.to(wd) * r.to(wd)
        v = self.velocity(x, sigma.flatten(), emb)
        return x + (1 - sigma).to(v.device, wd) * v


@register
class Flux(Family):
    name = "flux"
    title = "Flux.1"
    pipeline_classes = ("FluxPipeline",)
    components = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    default_sampler = "flow_euler"
    default_guidance = 3.5
    native_size = 1024
    notes = ("flow matching (velocity), inverted as the equivalent ε-model: DDIM steps are exact Euler steps "
             "of the flow ODE; T5 + CLIP-pooled text; 16-channel latents packed 2×2; distilled guidance 3.5 "
             "(dev); the seed is the initial noise [16, H/8, W/8].")

    @classmethod
    def load(cls, root: Path, dtype: torch.dtype, device: str, source: str) -> SDPipeline:
        from diffusers import FluxTransformer2DModel
        from transformers import AutoTokenizer, T5EncoderModel

        require_components(root, cls.components)
        parts = load_sd_components(root, dtype, "transformer", FluxTransformer2DModel)
        parts["text_encoder_2"] = load_component(root / "text_encoder_2", lambda f: T5EncoderModel.from_pretrained(
            f, local_files_only=True, dtype=dtype))
        parts["tokenizer_2"] = load_component(root / "tokenizer_2", lambda f: AutoTokenizer.from_pretrained(f, local_files_only=True))
        index = json.loads((root / "model_index.json").read_text())
        sched = {k: v for k, v in scheduler_config(root).items() if k in FLOW_SCHEDULER_KEYS} or dict(FLUX_DEFAULT_SCHEDULER)
        pipe = FluxPipeline(**parts, scheduler_config=sched, source=source, family=cls.name,
                            max_sequence_length=int(index.get("max_sequence_length", 512)))
        pipe.native_size = int(index.get("default_sample_size", 128)) * pipe.vae_scale  # FluxPipeline's 128 latent cells
        for module in pipe.modules():
            module.to(torch.device(device))
        return pipe.eval()

    @classmethod
    def save(cls, pipe: SDPipeline, path: Path) -> Path:
        extra = {"max_sequence_length": getattr(pipe, "max_sequence_length", 512),
                 "default_sample_size": pipe.image_size // pipe.vae_scale}
        return write_sd_folder(pipe, path, "FluxPipeline", extra, scheduler_class="FlowMatchEulerDiscreteScheduler")

    @classmethod
    def claims_unet(cls, shapes: Shapes) -> bool | None:
        """Yes for a Flux transformer's keys (diffusers or BFL names), no for anything else."""
        return looks_like_flux_transformer(shapes)
