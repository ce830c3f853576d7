"""CompVis / LDM single-file checkpoints (``.ckpt``/``.safetensors`` with ``model.diffusion_model.*``,
possibly under ``state_dict``) converted to diffusers keys with diffusers' own converters
(``diffusers.loaders.single_file_utils``): the UNet via ``convert_ldm_unet_checkpoint`` (non-EMA
weights), the CLIP text encoder (``cond_stage_model.transformer.*``) via
``convert_ldm_clip_checkpoint``. The VAE (``first_stage_model.*``) is not converted: erasure methods
leave it unchanged and the base VAE is kept (the report says so).
"""
from __future__ import annotations

from typing import Any

import torch

from memtui.engine.model.loading import keys as K


def split_ldm(sd: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{"unet": {...}, "text_encoder": {...}, "vae": {...}, "other": {...}}`` by LDM key prefix
    (the prefixes are kept, as diffusers' converters expect them)."""
    out: dict[str, dict[str, torch.Tensor]] = {"unet": {}, "text_encoder": {}, "vae": {}, "other": {}}
    for k, v in sd.items():
        if k.startswith(K.LDM_UNET_PREFIX) or k.startswith("model_ema."):
            out["unet"][k] = v
        elif k.startswith(K.LDM_TEXT_PREFIXES):
            out["text_encoder"][k] = v
        elif k.startswith(K.LDM_VAE_PREFIX):
            out["vae"][k] = v
        else:
            out["other"][k] = v
    return out


def convert_unet(ldm: dict[str, torch.Tensor], unet_config: dict[str, Any],
                 warnings: list[str]) -> dict[str, torch.Tensor]:
    """Diffusers UNet state dict from the ``model.diffusion_model.*`` tensors of an LDM checkpoint,
    for a UNet with ``unet_config`` (the base's config: layers per block, class embeddings)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    n_ema = sum(k.startswith("model_ema.") for k in ldm)
    if n_ema:
        warnings.append(f"ignored {n_ema} EMA tensors (model_ema.*); loaded the trained (non-EMA) UNet weights")
    n_in = sum(k.startswith(K.LDM_UNET_PREFIX) for k in ldm)
    out = convert_ldm_unet_checkpoint(dict(ldm), dict(unet_config))
    out = {k: v for k, v in out.items() if v is not None}
    if len(out) < n_in:
        warnings.append(f"{n_in - len(out)} of {n_in} CompVis UNet tensors had no diffusers "
                        "counterpart and were not loaded")
    return out


def convert_text_encoder(ldm: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIP text-encoder state dict (``text_model.*`` or bare transformers keys) from
    ``cond_stage_model.transformer.*`` tensors."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

    return convert_ldm_clip_checkpoint(dict(ldm))
