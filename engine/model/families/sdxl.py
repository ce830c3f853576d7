"""Stable Diffusion XL: two CLIP text encoders (ViT-L hidden states and OpenCLIP-bigG hidden states
concatenated, width 768 + 1280 = 2048; bigG's projected pooled embedding), the UNet's added
conditioning (pooled text + the six "time ids" original size, crop, target size), 1024 px native.

To keep one conditioning tensor per prompt for every method (guidance concatenates it, NTI
optimises the unconditional one), :class:`SDXLPipeline` packs the pooled embedding as one extra
token: ``emb = [hidden states (L tokens); pooled padded to D]`` of shape ``[B, L + 1, D]``. The
empty prompt is all zeros (``force_zeros_for_empty_prompt``, diffusers' default negative for SDXL).
Time ids are ``(H, W, 0, 0, H, W)`` of the latents' own size. The VAE runs in float32 when the
model runs in fp16/bf16 (``force_upcast``), unless the user gives an fp16-safe VAE
(``force_upcast: false`` in its config, as madebyollin/sdxl-vae-fp16-fix)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from memtui.engine.model.families.base import Family, Shapes
from memtui.engine.model.families.conditioning import pack_pooled, unpack_hidden, unpack_pooled
from memtui.engine.model.families.registry import register
from memtui.engine.model.families.sd import load_sd_components, write_sd_folder
from memtui.engine.model.families.unet_keys import (cross_attention_width, has_added_embedding, is_full_unet,
                                                    projection_ndim)
from memtui.engine.model.loading.components import load_component, require_components, scheduler_config
from memtui.engine.model.pipeline import SDPipeline

__all__ = ["SDXL", "SDXLPipeline"]


@dataclass
class SDXLPipeline(SDPipeline):
    """SDXL: :class:`SDPipeline` plus the second text encoder and tokenizer."""

    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_2: CLIPTokenizer | None = None
    force_zeros_for_empty_prompt: bool = True

    def component_modules(self) -> dict[str, torch.nn.Module]:
        return {**super().component_modules(), "text_encoder_2": self.text_encoder_2}

    def tokenizers(self) -> dict[str, Any]:
        return {**super().tokenizers(), "tokenizer_2": self.tokenizer_2}

    @property
    def pooled_dim(self) -> int:
        return int(self.text_encoder_2.config.projection_dim)

    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Packed conditioning ``[B, L + 1, D]``: penultimate hidden states of both encoders
        concatenated (``[B, L, D]``), then bigG's pooled projection ``[B, P]`` zero-padded to D."""
        hidden, pooled = [], None
        for tok, enc in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tok(prompts, padding="max_length", truncation=True, max_length=tok.model_max_length,
                      return_tensors="pt").input_ids.to(self.device)
            out = enc(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]  # CLIPTextModelWithProjection: text_embeds [B, P]
        emb = pack_pooled(torch.cat(hidden, dim=-1), pooled)
        if self.force_zeros_for_empty_prompt:
            empty = torch.tensor([p == "" for p in prompts], device=emb.device)
            emb = torch.where(empty.view(-1, 1, 1), torch.zeros_like(emb), emb)
        return emb

    def hidden_states(self, emb: torch.Tensor) -> torch.Tensor:
        return unpack_hidden(emb).to(self.device, self.dtype)

    def added_conditioning(self, z: torch.Tensor, emb: torch.Tensor) -> dict[str, object]:
        h, w = z.shape[-2] * self.vae_scale, z.shape[-1] * self.vae_scale
        ids = torch.tensor([h, w, 0, 0, h, w], dtype=self.dtype, device=self.device).repeat(z.shape[0], 1)
        pooled = unpack_pooled(emb, self.pooled_dim).to(self.device, self.dtype)
        return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids}}


@register
class SDXL(Family):
    name = "sdxl"
    title = "Stable Diffusion XL"
    pipeline_classes = ("StableDiffusionXLPipeline",)
    components = ("unet", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    default_sampler = "euler"
    default_guidance = 5.0
    native_size = 1024
    notes = ("two text encoders (width 768 + 1280), pooled embedding and time ids as added conditioning; "
             "ε-prediction; 1024 px native (--image-size for smaller); VAE in fp32 under fp16 unless fp16-safe.")

    @classmethod
    def load(cls, root: Path, dtype: torch.dtype, device: str, source: str) -> SDPipeline:
        require_components(root, cls.components)
        parts = load_sd_components(root, dtype)
        parts["text_encoder_2"] = load_component(root / "text_encoder_2", lambda f: CLIPTextModelWithProjection.from_pretrained(
            f, local_files_only=True, dtype=dtype))
        parts["tokenizer_2"] = load_component(root / "tokenizer_2", lambda f: CLIPTokenizer.from_pretrained(f, local_files_only=True))
        index = json.loads((root / "model_index.json").read_text())
        upcast = bool(parts["vae"].config.get("force_upcast", True))
        pipe = SDXLPipeline(**parts, scheduler_config=scheduler_config(root), source=source, family=cls.name,
                            vae_upcast=upcast, force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt", True)))
        for module in pipe.modules():  # already in dtype (from_pretrained): move only
            module.to(torch.device(device))
        if upcast and dtype in (torch.float16, torch.bfloat16):
            pipe.vae.to(torch.float32)
        return pipe.eval()

    @classmethod
    def save(cls, pipe: SDPipeline, path: Path) -> Path:
        zeros = bool(getattr(pipe, "force_zeros_for_empty_prompt", True))
        return write_sd_folder(pipe, path, "StableDiffusionXLPipeline", {"force_zeros_for_empty_prompt": zeros})

    @classmethod
    def claims_unet(cls, shapes: Shapes) -> bool | None:
        if has_added_embedding(shapes):
            return True
        width, ndim = cross_attention_width(shapes), projection_ndim(shapes)
        if width in (768, 1024) or ndim == 4 or is_full_unet(shapes):
            return False
        if width == 2048:
            return True
        return None
