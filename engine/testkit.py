"""Tiny random-weight Stable Diffusion models built from configs with the real classes
(UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer): no download, seconds on a CPU.

Defaults: 32x32 RGB images, VAE 16/32/32 (4x downsampling, 4 latent channels) -> seeds 4x8x8,
UNet 32/64 with cross-attention dim 32, CLIP text encoder hidden 32, 2 layers, 77 tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .pipeline import SDPipeline
from .schedule import SD14_DDIM_CONFIG
from .tokenizer import build_word_tokenizer

TINY_WORDS = ("a", "photo", "of", "red", "blue", "green", "circle", "square", "triangle", "star",
              "church", "dog", "cat", "on", "the", "with", "nude", "person", "painting", "van", "gogh")


def tiny_pipeline(seed: int = 0, image_size: int = 32, cross_dim: int = 32) -> SDPipeline:
    """A random-weight SD-layout pipeline (eval mode, fp32, CPU), deterministic for ``seed``."""
    torch.manual_seed(seed)
    tok = build_word_tokenizer(TINY_WORDS)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8,
        sample_size=image_size, scaling_factor=0.18215,
    )
    unet = UNet2DConditionModel(
        sample_size=image_size // 4, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=16,
        cross_attention_dim=cross_dim, attention_head_dim=8,
    )
    vocab = tok.get_vocab()
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=cross_dim, intermediate_size=2 * cross_dim,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    ))
    return SDPipeline(unet=unet, vae=vae, text_encoder=te, tokenizer=tok,
                      scheduler_config=dict(SD14_DDIM_CONFIG), source=f"testkit:tiny(seed={seed})").eval()


def save_pipeline(pipe: SDPipeline, path: str | Path) -> Path:
    """Write ``pipe`` as a diffusers pipeline folder (``model_index.json`` + one folder per
    component, safetensors weights), the layout of ``CompVis/stable-diffusion-v1-4``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe.unet.save_pretrained(path / "unet")
    pipe.vae.save_pretrained(path / "vae")
    pipe.text_encoder.save_pretrained(path / "text_encoder")
    pipe.tokenizer.save_pretrained(path / "tokenizer")
    (path / "scheduler").mkdir(exist_ok=True)
    sched = {"_class_name": "DDIMScheduler", **pipe.scheduler_config}
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2))
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False,
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path
