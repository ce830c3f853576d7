"""Tiny random-weight Stable Diffusion models built from configs with the real classes
(UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer): no download, seconds on a CPU.

Defaults: 32x32 RGB images, VAE 16/32/32 (4x downsampling, 4 latent channels) -> seeds 4x8x8,
UNet 32/64 with cross-attention dim 32, CLIP text encoder hidden 32, 2 layers, 77 tokens.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from memtui.engine.model.loading.save import save_pipeline
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import SD14_DDIM_CONFIG
from memtui.engine.model.tokenizer import build_word_tokenizer

__all__ = ["TINY_WORDS", "tiny_pipeline", "tiny_sdxl_pipeline", "tiny_flux_pipeline", "tiny_t5_tokenizer", "save_lora", "save_pipeline", "perturbed", "save_state_dict",
           "save_unet_state_dict", "save_unet_folder", "save_text_encoder", "save_delta", "diffusers_unet_to_ldm",
           "save_compvis_checkpoint", "save_spm_adapter", "save_receler_eraser"]

TINY_WORDS = ("a", "photo", "of", "red", "blue", "green", "circle", "square", "triangle", "star",
              "church", "dog", "cat", "on", "the", "with", "nude", "person", "painting", "van", "gogh")


def tiny_pipeline(seed: int = 0, image_size: int = 32, cross_dim: int = 32, family: str = "sd1",
                  prediction_type: str | None = None) -> SDPipeline:
    """A random-weight pipeline of ``family`` (eval mode, fp32, CPU), deterministic for ``seed``:
    ``sd1`` (conv projections, quick-GELU CLIP, ε), ``sd2`` (linear projections, GELU CLIP; v-prediction
    unless ``prediction_type`` says otherwise), ``sdxl`` (two text encoders of width ``cross_dim``,
    text_time added conditioning; ε)."""
    if family == "sdxl":
        return tiny_sdxl_pipeline(seed, image_size, cross_dim, prediction_type or "epsilon")
    if family == "flux":
        return tiny_flux_pipeline(seed, image_size, cross_dim)
    if family not in ("sd1", "sd2"):
        raise ValueError(f"no tiny pipeline for family {family!r}")
    sd2 = family == "sd2"
    torch.manual_seed(seed)
    tok = build_word_tokenizer(TINY_WORDS)
    vae = _tiny_vae(image_size)
    unet = _tiny_unet(image_size, cross_dim, use_linear_projection=sd2)
    te = CLIPTextModel(_tiny_text_config(tok, cross_dim, hidden_act="gelu" if sd2 else "quick_gelu"))
    sched = dict(SD14_DDIM_CONFIG, prediction_type=prediction_type or ("v_prediction" if sd2 else "epsilon"))
    return SDPipeline(unet=unet, vae=vae, text_encoder=te, tokenizer=tok, scheduler_config=sched,
                      source=f"testkit:tiny-{family}(seed={seed})", family=family).eval()


def _tiny_unet(image_size: int, cross_dim: int, **config: Any) -> UNet2DConditionModel:
    """The tiny two-level UNet (32/64 channels, latents ``image_size // 4``) reading ``cross_dim``
    text; ``config``: the family's own UNet settings."""
    return UNet2DConditionModel(
        sample_size=image_size // 4, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=16,
        cross_attention_dim=cross_dim, attention_head_dim=8, **config)


def tiny_sdxl_pipeline(seed: int = 0, image_size: int = 32, width: int = 32,
                       prediction_type: str = "epsilon") -> SDPipeline:
    """A random-weight SDXL-layout pipeline: CLIPTextModel + CLIPTextModelWithProjection (both of
    hidden width ``width``, projection ``width``), a UNet with ``addition_embed_type="text_time"``
    reading ``2·width`` text, the tiny VAE."""
    from transformers import CLIPTextModelWithProjection

    from memtui.engine.model.families.sdxl import SDXLPipeline

    torch.manual_seed(seed)
    tok = build_word_tokenizer(TINY_WORDS)
    vae = _tiny_vae(image_size)
    unet = _tiny_unet(image_size, 2 * width, use_linear_projection=True, addition_embed_type="text_time",
                      addition_time_embed_dim=8, projection_class_embeddings_input_dim=width + 6 * 8)
    te = CLIPTextModel(_tiny_text_config(tok, width, hidden_act="quick_gelu"))
    te2 = CLIPTextModelWithProjection(_tiny_text_config(tok, width, hidden_act="gelu", projection_dim=width))
    sched = dict(SD14_DDIM_CONFIG, prediction_type=prediction_type)
    return SDXLPipeline(unet=unet, vae=vae, text_encoder=te, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok,
                        scheduler_config=sched, source=f"testkit:tiny-sdxl(seed={seed})", family="sdxl",
                        vae_upcast=True).eval()


def tiny_flux_pipeline(seed: int = 0, image_size: int = 32, width: int = 32, guidance_embeds: bool = True,
                       shift: dict[str, Any] | None = None) -> SDPipeline:
    """A random-weight Flux.1-layout pipeline: ``FluxTransformer2DModel`` (1 double + 1 single
    block, 2 heads of 16, guidance embedding as FLUX.1-dev unless ``guidance_embeds=False``),
    CLIPTextModel (pooled width ``width``) + T5EncoderModel (width ``width``, 16 tokens, read through
    :func:`tiny_t5_tokenizer`), a
    16-channel VAE with Flux's scaling and shift factors (4x downsampling: seeds 16x8x8 at 32 px).
    ``shift``: the scheduler config (FLUX.1-dev's dynamic shifting by default)."""
    from diffusers import FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from memtui.engine.model.families.flux import FLUX_DEFAULT_SCHEDULER, FluxPipeline

    torch.manual_seed(seed)
    tok = build_word_tokenizer(TINY_WORDS)
    vae = _tiny_vae(image_size, latent_channels=16, scaling_factor=0.3611, shift_factor=0.1159,
                    use_quant_conv=False, use_post_quant_conv=False)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=width,
                                         pooled_projection_dim=width, guidance_embeds=guidance_embeds,
                                         axes_dims_rope=(4, 6, 6))
    te = CLIPTextModel(_tiny_text_config(tok, width, hidden_act="quick_gelu"))
    tok2 = tiny_t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=width, d_kv=8, d_ff=2 * width, num_layers=2,
                                 num_heads=4, pad_token_id=tok2.pad_token_id, eos_token_id=tok2.eos_token_id))
    return FluxPipeline(unet=transformer, vae=vae, text_encoder=te, tokenizer=tok, text_encoder_2=t5, tokenizer_2=tok2,
                        scheduler_config=dict(shift if shift is not None else FLUX_DEFAULT_SCHEDULER),
                        source=f"testkit:tiny-flux(seed={seed})", family="flux", max_sequence_length=16,
                        native_size=image_size).eval()


def tiny_t5_tokenizer() -> Any:
    """A ``T5TokenizerFast`` over :data:`TINY_WORDS` (a Unigram model with SentencePiece's ``▁``
    word marks, ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2), built locally: Flux's second tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + w, -1.0) for w in TINY_WORDS]
    tk = Tokenizer(models.Unigram(vocab, unk_id=2))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    return T5TokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0)


def _tiny_vae(image_size: int, latent_channels: int = 4, scaling_factor: float = 0.18215, **config: Any) -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8,
        sample_size=image_size, scaling_factor=scaling_factor, **config,
    )


def _tiny_text_config(tok, width: int, hidden_act: str, projection_dim: int | None = None) -> CLIPTextConfig:
    vocab = tok.get_vocab()
    extra = {"projection_dim": projection_dim} if projection_dim else {}
    return CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=width, intermediate_size=2 * width,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77, hidden_act=hidden_act,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"], **extra,
    )


# --------------------------------------------------------------------------- checkpoint kinds
# Savers that write a (tiny) pipeline's components as each ablated-checkpoint kind memtui loads
# (peers.md §3: K1-K9), so the loaders are exercised on the same code path as real releases.

def perturbed(pipe: SDPipeline, pattern: str, component: str = "unet", scale: float = 0.05,
              seed: int = 1) -> tuple[SDPipeline, list[str]]:
    """A copy of ``pipe`` (modules deep-copied, tokenizer shared) whose ``component`` tensors with
    names matching the regex ``pattern`` got Gaussian noise of std ``scale``; returns it and the
    sorted component-qualified names of the changed tensors (e.g. ``unet.…attn2.to_k.weight``)."""
    import copy
    import dataclasses
    import re

    modules = {name: copy.deepcopy(m) for name, m in pipe.component_modules().items()}
    new = dataclasses.replace(pipe, **modules, scheduler_config=dict(pipe.scheduler_config),
                              source=pipe.source + "+perturbed", _prompt_cache={}, _alphas=None)
    module = getattr(new, component)
    gen = torch.Generator().manual_seed(seed)
    changed = []
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if re.search(pattern, name) and t.is_floating_point():
                t.add_(scale * torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype))
                changed.append(f"{component}.{name}")
    if not changed:
        raise ValueError(f"no {component} tensor matches {pattern!r}")
    return new, sorted(changed)


def save_state_dict(sd: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a flat or nested dict of tensors: ``.safetensors`` (flat only) or a plain torch pickle
    (``.pt/.bin/.ckpt/.pth``) that ``torch.load(weights_only=True)`` accepts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(path), metadata={"format": "pt"})
    else:
        torch.save(sd, path)
    return path


def save_unet_state_dict(unet: torch.nn.Module, path: str | Path, keys: list[str] | None = None) -> Path:
    """A diffusers-keyed UNet state dict (K3), or only ``keys`` of it (K4, partial)."""
    sd = {k: v.detach().clone() for k, v in unet.state_dict().items() if keys is None or k in keys}
    return save_state_dict(sd, path)


def save_unet_folder(unet: torch.nn.Module, path: str | Path) -> Path:
    """A diffusers UNet folder (K2): ``config.json`` + ``diffusion_pytorch_model.safetensors``."""
    unet.save_pretrained(Path(path))
    return Path(path)


def save_text_encoder(text_encoder: torch.nn.Module, path: str | Path, prefix: str = "text_model.") -> Path:
    """The CLIP text encoder (K9): a transformers folder when ``path`` has no weight suffix, else a
    state dict file whose keys carry ``prefix`` (``text_model.`` as AdvUnlearn's ``.pt`` files)."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".pt", ".bin", ".pth", ".ckpt"):
        text_encoder.save_pretrained(path)
        return path
    sd = {}
    for k, v in text_encoder.state_dict().items():
        bare = k[len("text_model."):] if k.startswith("text_model.") else k
        sd[prefix + bare] = v.detach().clone()
    return save_state_dict(sd, path)


def save_delta(path: str | Path, unet_sd: dict[str, torch.Tensor] | None = None,
               text_encoder_sd: dict[str, torch.Tensor] | None = None) -> Path:
    """An Ablating-Concepts style ``delta.bin`` (K6): ``{"unet": {...}, "text_encoder": {...}}``."""
    delta: dict[str, dict[str, torch.Tensor]] = {}
    if unet_sd is not None:
        delta["unet"] = {k: v.detach().clone() for k, v in unet_sd.items()}
    if text_encoder_sd is not None:
        delta["text_encoder"] = {k: v.detach().clone() for k, v in text_encoder_sd.items()}
    return save_state_dict(delta, path)


_LDM_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
               "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


def diffusers_unet_to_ldm(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Inverse of diffusers' ``convert_ldm_unet_checkpoint`` for SD 1.x-layout UNets: diffusers keys
    -> ``model.diffusion_model.*`` CompVis keys (for fabricating test ``.ckpt`` files)."""
    lpb, n = int(config["layers_per_block"]), len(config["block_out_channels"])
    m = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
         "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
         "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
         "mid_block.resnets.1": "middle_block.2"}
    for b in range(n):
        for j in range(lpb):
            m[f"down_blocks.{b}.resnets.{j}"] = f"input_blocks.{1 + b * (lpb + 1) + j}.0"
            m[f"down_blocks.{b}.attentions.{j}"] = f"input_blocks.{1 + b * (lpb + 1) + j}.1"
        if b < n - 1:
            m[f"down_blocks.{b}.downsamplers.0.conv"] = f"input_blocks.{1 + b * (lpb + 1) + lpb}.0.op"
        up_attn = any(k.startswith(f"up_blocks.{b}.attentions.") for k in sd)
        for j in range(lpb + 1):
            m[f"up_blocks.{b}.resnets.{j}"] = f"output_blocks.{b * (lpb + 1) + j}.0"
            m[f"up_blocks.{b}.attentions.{j}"] = f"output_blocks.{b * (lpb + 1) + j}.1"
        if b < n - 1:
            m[f"up_blocks.{b}.upsamplers.0.conv"] = f"output_blocks.{b * (lpb + 1) + lpb}.{2 if up_attn else 1}.conv"
    out = {}
    for key, v in sd.items():
        prefix = max((p for p in m if key.startswith(p + ".")), key=len, default=None)
        if prefix is None:
            raise KeyError(f"no CompVis name for UNet key {key}")
        rest = key[len(prefix) + 1:]
        if ".resnets." in prefix or prefix.startswith("mid_block.resnets"):
            head, _, tail = rest.partition(".")
            rest = f"{_LDM_RESNET.get(head, head)}.{tail}"
        out[f"model.diffusion_model.{m[prefix]}.{rest}"] = v
    return out


def save_compvis_checkpoint(pipe: SDPipeline, path: str | Path, text_encoder: bool = True) -> Path:
    """A CompVis/LDM single-file checkpoint (K5): ``{"state_dict": {model.diffusion_model.*,
    cond_stage_model.transformer.text_model.*}, "global_step": 0}`` as a torch pickle (``.ckpt``)
    or flat safetensors."""
    sd = diffusers_unet_to_ldm({k: v.detach().clone() for k, v in pipe.unet.state_dict().items()},
                               dict(pipe.unet.config))
    if text_encoder:
        for k, v in pipe.text_encoder.state_dict().items():
            bare = k[len("text_model."):] if k.startswith("text_model.") else k
            sd[f"cond_stage_model.transformer.text_model.{bare}"] = v.detach().clone()
    path = Path(path)
    if path.suffix == ".safetensors":
        return save_state_dict(sd, path)
    return save_state_dict({"state_dict": sd, "global_step": 0}, path)


def save_spm_adapter(unet: torch.nn.Module, path: str | Path, rank: int = 2, alpha: float = 1.0) -> Path:
    """An SPM-style LoRA adapter (K7) for every cross-attention K/V: safetensors with
    ``lora_unet_<module>.lora_down/up.weight`` keys and rank/alpha/prompts metadata."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    sd = {}
    for name, t in unet.state_dict().items():
        if name.endswith(("attn2.to_k.weight", "attn2.to_v.weight")):
            base = "lora_unet_" + name[: -len(".weight")].replace(".", "_")
            sd[f"{base}.lora_down.weight"] = torch.randn(rank, t.shape[1], generator=gen)
            sd[f"{base}.lora_up.weight"] = torch.zeros(t.shape[0], rank)
    save_file(sd, str(path), metadata={"rank": str(rank), "alpha": str(alpha), "prompts": "van gogh"})
    return Path(path)


def save_lora(pipe: SDPipeline, path: str | Path, rank: int = 2, seed: int = 0,
              pattern: str = r"attn\d?\.to_[qkv]$", text_encoder: bool = False) -> Path:
    """A diffusers-format LoRA (``lora_A``/``lora_B`` under ``unet.`` or ``transformer.``, as
    ``save_lora_weights`` writes) with random non-zero factors on the denoiser's linear layers whose
    names match the regex ``pattern`` (attention q/k/v by default), plus the text encoder's q/k/v
    projections when ``text_encoder``; safetensors."""
    import re

    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    comps = pipe.component_modules()
    denoiser = "transformer" if "transformer" in comps else "unet"
    wanted = [(denoiser, pattern)] + ([("text_encoder", r"self_attn\.[qkv]_proj$")] if text_encoder else [])
    out: dict[str, torch.Tensor] = {}
    for prefix, pat in wanted:
        for name, sub in comps[prefix].named_modules():
            if isinstance(sub, torch.nn.Linear) and re.search(pat, name):
                out[f"{prefix}.{name}.lora_A.weight"] = 0.3 * torch.randn(rank, sub.in_features, generator=gen)
                out[f"{prefix}.{name}.lora_B.weight"] = 0.3 * torch.randn(sub.out_features, rank, generator=gen)
    if not out:
        raise ValueError(f"no linear layer of the {denoiser} matches {pattern!r}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    return Path(path)


def save_receler_eraser(unet: torch.nn.Module, folder: str | Path, rank: int = 2) -> Path:
    """A Receler-style eraser (K8): ``eraser_weights.pt`` (adapters keyed by UNet block prefix) and
    ``eraser_config.json`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {}
    for name, t in unet.state_dict().items():
        if name.endswith("attn2.to_out.0.weight"):
            block = name[: -len(".attn2.to_out.0.weight")]
            sd[f"{block}.eraser.down.weight"] = torch.zeros(rank, t.shape[0])
            sd[f"{block}.eraser.up.weight"] = torch.zeros(t.shape[0], rank)
    torch.save(sd, folder / "eraser_weights.pt")
    (folder / "eraser_config.json").write_text(json.dumps({"rank": rank, "concept": "nudity"}))
    return folder
