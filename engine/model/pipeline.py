"""The in-memory Stable Diffusion model memtui works on: components plus the few operations every
analysis needs (prompt encoding, VAE encode/decode in *scaled* latent space, one UNet call).

Latent convention: the diffusion model sees ``z = s * z_vae`` (``s`` = ``vae.config.scaling_factor``,
0.18215 for SD 1.4). Images are tensors ``[B, 3, H, W]`` in [-1, 1]. Arithmetic outside the networks
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
    _prompt_cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def work_dtype(self) -> torch.dtype:
        """The dtype of arithmetic outside the networks: float64 for a float64 model (exactness
        tests), float32 otherwise (fp32, fp16, bf16)."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

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

    def make_scheduler(self) -> DDIMScheduler:
        """A fresh DDIM scheduler with this model's noise schedule (spec §0.2)."""
        return make_ddim(self.scheduler_config)

    # ------------------------------------------------------------------ state
    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "SDPipeline":
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for m in (self.unet, self.vae, self.text_encoder):
            m.to(**kwargs)
        self._prompt_cache.clear()
        return self

    def eval(self) -> "SDPipeline":
        for m in (self.unet, self.vae, self.text_encoder):
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
            tok = self.tokenizer(list(missing), padding="max_length", truncation=True,
                                 max_length=self.tokenizer.model_max_length, return_tensors="pt")
            emb = self.text_encoder(tok.input_ids.to(self.device))[0]
            for p, e in zip(missing, emb):
                self._prompt_cache[p] = e
        return torch.stack([self._prompt_cache[p] for p in prompts])

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
                dist = self.vae.encode(part.to(self.device, self.dtype)).latent_dist
                means.append(dist.mean.float())
                stds.append(dist.std.float())
        mean, std = torch.cat(means), torch.cat(stds)
        if noise is not None:
            if tuple(noise.shape) != tuple(mean.shape):
                raise ValueError(f"noise must have the latents' shape {tuple(mean.shape)}, got {tuple(noise.shape)}")
            mean = mean + std * noise.to(mean.device, torch.float32)
        return mean * self.scaling_factor

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` (float32, not clamped, nominally [-1, 1]) from scaled latents,
        :attr:`vae_chunk` at a time."""
        return torch.cat([self.vae.decode((part / self.scaling_factor).to(self.device, self.dtype)).sample.float()
                          for part in self._vae_chunks(z)])

    def _vae_chunks(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``x`` split along the batch into :attr:`vae_chunk`-sized parts (one part when unset)."""
        if not self.vae_chunk or x.shape[0] <= self.vae_chunk:
            return (x,)
        return x.split(self.vae_chunk)

    # ------------------------------------------------------------------ UNet
    def eps(self, z: torch.Tensor, t: int | torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Noise prediction ``[B, C, h, w]`` (:attr:`work_dtype`: float32, float64 for a float64 model)
        at timestep ``t`` for latents ``z`` and text embeddings ``emb [B, L, D]``."""
        out = self.unet(z.to(self.device, self.dtype), t, encoder_hidden_states=emb.to(self.device, self.dtype)).sample
        return out.to(self.work_dtype)
