"""The in-memory Stable Diffusion model memtui works on: components plus the few operations every
analysis needs (prompt encoding, VAE encode/decode in *scaled* latent space, one noise prediction).

A model family (:mod:`memtui.engine.model.families`) may subclass :class:`SDPipeline` (SDXL adds a
second text encoder, pooled embeddings and time ids); the inversion methods and analyses see only
this interface: ``encode_prompts`` gives one conditioning tensor ``[B, L, D]`` per prompt and
``eps`` always returns an ε-prediction (a v-prediction model's output is converted), so no method
has per-family code.

Latent convention: the diffusion model sees ``z = s * (z_vae - shift)`` (``s`` =
``vae.config.scaling_factor``, 0.18215 for SD 1.4; ``shift`` = ``vae.config.shift_factor``, 0 for SD).
The ``unet`` field holds the denoising network: a UNet, or Flux's transformer. Images are tensors ``[B, 3, H, W]`` in [-1, 1]. Arithmetic outside the networks
is done in float32 whatever the model precision.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from memtui.engine.model.schedule import make_ddim

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(precision: str | torch.dtype) -> torch.dtype:
    """'fp32' | 'fp16' | 'bf16' (or a torch dtype) -> torch dtype; ValueError otherwise."""
    if isinstance(precision, torch.dtype):
        return precision
    try:
        return DTYPES[precision]
    except KeyError:
        raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}") from None


@dataclass
class SDPipeline:
    """A text-to-image latent diffusion model (SD 1.x layout) held on one device in one precision."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    vae_chunk: int | None = None  # images per VAE encode/decode call (None: the whole batch)
    family: str = "sd1"  # the model family's registry name (memtui.engine.model.families)
    vae_upcast: bool = False  # keep the VAE in float32 when the model runs in fp16/bf16 (SDXL's VAE overflows)
    _alphas: torch.Tensor | None = field(default=None, repr=False)  # alphas_cumprod [T] float64 (v -> ε)
    _prompt_cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_dtype(self) -> torch.dtype:
        """The VAE's dtype (float32 for an upcast VAE, else the model's)."""
        return self.vae.dtype

    @property
    def is_flow(self) -> bool:
        """Whether the network predicts a flow-matching velocity (Flux) rather than noise; every
        family still offers :meth:`eps`, and flow samplers use the family's ``velocity``."""
        return False

    @property
    def prediction_type(self) -> str:
        """What the network predicts: ``epsilon`` or ``v_prediction`` (SD 2.x 768 px models), from
        the scheduler config; :meth:`eps` converts ``v_prediction`` to ε."""
        return str(self.scheduler_config.get("prediction_type") or "epsilon")

    @property
    def work_dtype(self) -> torch.dtype:
        """The dtype of arithmetic outside the networks: float64 for a float64 model (exactness
        tests), float32 otherwise (fp32, fp16, bf16)."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def vae_shift(self) -> float:
        """The VAE latents' shift (``vae.config.shift_factor``; 0 for SD, 0.1159 for Flux):
        ``z = s·(z_vae − shift)``."""
        return float(self.vae.config.get("shift_factor") or 0.0)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this many pixels (the VAE's downsampling; a family that
        packs latent patches, as Flux does 2×2, multiplies it)."""
        return self.vae_scale

    @property
    def vae_scale(self) -> int:
        """Pixels per latent cell along one side (8 for SD 1.4)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def image_size(self) -> int:
        """Native image side in pixels (512 for SD 1.4)."""
        return int(self.unet.config.sample_size) * self.vae_scale

    def latent_shape(self, image_size: int | None = None) -> tuple[int, int, int]:
        """Shape ``(C, h, w)`` of one seed for square images of ``image_size`` pixels."""
        side = (image_size or self.image_size) // self.vae_scale
        return (self.latent_channels, side, side)

    def use_embedded_guidance(self, guidance: float | None) -> bool:
        """Set the distilled guidance a guidance-distilled model reads on every call (None: its
        default); returns whether this model has such an input (the UNet families have none)."""
        return False

    def use_image_size(self, px: int) -> None:
        """Set the square image side (pixels) the next inversions work at; the UNet families' noise
        schedule does not depend on it (Flux's σ grid does: its family overrides this)."""

    def make_scheduler(self) -> DDIMScheduler:
        """A fresh DDIM scheduler with this model's noise schedule (spec §0.2)."""
        return make_ddim(self.scheduler_config)

    # ------------------------------------------------------------------ state
    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "SDPipeline":
        for m in self.modules():
            upcast = m is self.vae and self.vae_upcast and dtype in (torch.float16, torch.bfloat16)
            dt = torch.float32 if upcast else dtype
            m.to(**{k: v for k, v in (("device", device), ("dtype", dt)) if v is not None})
        self._prompt_cache.clear()
        return self

    def component_modules(self) -> dict[str, torch.nn.Module]:
        """The network components by pipeline-folder name (a family with more text encoders adds them)."""
        return {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder}

    def modules(self) -> tuple[torch.nn.Module, ...]:
        return tuple(self.component_modules().values())

    def tokenizers(self) -> dict[str, Any]:
        """The tokenizers by pipeline-folder name."""
        return {"tokenizer": self.tokenizer}

    def eval(self) -> "SDPipeline":
        for m in self.modules():
            m.eval().requires_grad_(False)
        return self

    def clear_prompt_cache(self) -> None:
        """Forget cached prompt embeddings (call after the text encoder's weights change)."""
        self._prompt_cache.clear()

    # ------------------------------------------------------------------ text
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``[B, L, D]`` (model dtype) for a batch of prompts; the text encoder runs
        once per distinct prompt (cached). Prompts are padded/truncated to the tokenizer's length."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            for p, e in zip(missing, self._encode_text(list(missing))):
                self._prompt_cache[p] = e
        return torch.stack([self._prompt_cache[p] for p in prompts])

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        """The text encoder's last hidden states ``[B, L, D]`` for distinct prompts (SD 1.x/2.x)."""
        tok = self.tokenizer(prompts, padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")
        return self.text_encoder(tok.input_ids.to(self.device))[0]

    # ------------------------------------------------------------------ VAE
    def encode_images(self, images: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled latents ``[B, C, h, w]`` (float32) of images ``[B, 3, H, W]`` in [-1, 1]: the
        posterior mean, or with standard-normal ``noise [B, C, h, w]`` the posterior sample
        ``mean + std·noise`` (the official ReNoise path draws it per item from a seeded CPU generator,
        spec §0.3 step 2: :func:`memtui.engine.diffusion.noise.noise_from_generators`). The VAE sees
        :attr:`vae_chunk` images at a time."""
        means, stds = [], []
        with torch.no_grad():
            for part in self._vae_chunks(images):
                dist = self.vae.encode(part.to(self.device, self.vae_dtype)).latent_dist
                means.append(dist.mean.float())
                stds.append(dist.std.float())
        mean, std = torch.cat(means), torch.cat(stds)
        if noise is not None:
            if tuple(noise.shape) != tuple(mean.shape):
                raise ValueError(f"noise must have the latents' shape {tuple(mean.shape)}, got {tuple(noise.shape)}")
            mean = mean + std * noise.to(mean.device, torch.float32)
        return (mean - self.vae_shift) * self.scaling_factor

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` (float32, not clamped, nominally [-1, 1]) from scaled latents,
        :attr:`vae_chunk` at a time."""
        return torch.cat([self.vae.decode((part / self.scaling_factor + self.vae_shift).to(self.device, self.vae_dtype)).sample.float()
                          for part in self._vae_chunks(z)])

    def _vae_chunks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``x`` split along the batch into :attr:`vae_chunk`-sized parts (one part when unset)."""
        if not self.vae_chunk or x.shape[0] <= self.vae_chunk:
            return (x,)
        return x.split(self.vae_chunk)

    # ------------------------------------------------------------------ UNet
    def eps(self, z: torch.Tensor, t: int | torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Noise prediction ε ``[B, C, h, w]`` (:attr:`work_dtype`: float32, float64 for a float64 model)
        at timestep ``t`` (a number, or one per row ``[B]``) for latents ``z`` and conditioning
        ``emb [B, L, D]``. A v-prediction network's output ``v = √ᾱ·ε − √(1−ᾱ)·x₀`` is converted:
        ``ε = √ᾱ_t·v + √(1−ᾱ_t)·z`` (ᾱ interpolated for the fractional timesteps of sigma samplers)."""
        out = self.unet(z.to(self.device, self.dtype), t, encoder_hidden_states=self.hidden_states(emb),
                        **self.added_conditioning(z, emb)).sample.to(self.work_dtype)
        if self.prediction_type == "v_prediction":
            a = self.alpha_at(t, out.shape[0]).to(out.device, out.dtype)
            out = a.sqrt() * out + (1 - a).sqrt() * z.to(out.device, out.dtype)
        elif self.prediction_type != "epsilon":
            raise ValueError(f"prediction_type {self.prediction_type!r} is not supported (epsilon, v_prediction)")
        return out

    def hidden_states(self, emb: torch.Tensor) -> torch.Tensor:
        """The UNet's ``encoder_hidden_states`` from the conditioning ``emb [B, L, D]``."""
        return emb.to(self.device, self.dtype)

    def added_conditioning(self, z: torch.Tensor, emb: torch.Tensor) -> dict[str, object]:
        """Extra UNet keyword arguments for latents ``z`` and conditioning ``emb`` (none for SD 1.x/2.x)."""
        return {}

    def alpha_at(self, t: int | float | torch.Tensor, batch: int) -> torch.Tensor:
        """``alphas_cumprod`` at timestep(s) ``t`` as ``[B, 1, 1, 1]`` float64, linearly interpolated
        between integer timesteps."""
        if self._alphas is None:
            self._alphas = make_ddim(self.scheduler_config).alphas_cumprod.double()
        ac = self._alphas
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1).cpu().clamp(0, len(ac) - 1)
        lo = tt.floor().long()
        hi = (lo + 1).clamp(max=len(ac) - 1)
        w = tt - lo.double()
        a = ac[lo] * (1 - w) + ac[hi] * w
        return a.expand(batch).reshape(batch, 1, 1, 1) if a.numel() == 1 else a.reshape(batch, 1, 1, 1)
