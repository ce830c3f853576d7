"""State-dict key conventions: unwrapping containers and normalising key names to diffusers /
transformers names before a checkpoint is compared with the base model.

PEFT-wrapped keys (``…to_k.base_layer.weight``): when the file holds no LoRA factors the wrapper
name is *stripped* (``…to_k.weight``); when it also holds unmerged ``lora_A/lora_B`` factors it is
*refused* (:class:`UnsupportedCheckpointError`), because dropping the factors would silently load the
un-erased base weights.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from memtui.engine.model.loading.errors import UnsupportedCheckpointError

UNET_FAMILIES = ("conv_in.", "time_embedding.", "down_blocks.", "mid_block.", "up_blocks.",
                 "conv_norm_out.", "conv_out.")
TEXT_PREFIXES = ("text_model.", "embeddings.", "encoder.", "final_layer_norm.")
# The original BFL names of a Flux transformer's top-level modules, and the keys only a Flux
# transformer has (diffusers or BFL names): what tells its state dicts from a UNet's.
FLUX_BFL_PREFIXES = ("double_blocks.", "single_blocks.", "img_in.", "txt_in.", "time_in.", "vector_in.",
                     "guidance_in.", "final_layer.")
FLUX_MARKERS = ("transformer_blocks.", "single_transformer_blocks.", "x_embedder.", "context_embedder.",
                "double_blocks.", "single_blocks.")
LDM_UNET_PREFIX = "model.diffusion_model."
LDM_TEXT_PREFIXES = ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer.")
LDM_VAE_PREFIX = "first_stage_model."
DELTA_GROUPS = ("unet", "text_encoder")
_WRAPPERS = ("state_dict", "model", "module", "params", "weights")
_LORA_MARKS = ("lora_", ".lora.", "lora_up", "lora_down", ".alpha")

# Custom Diffusion / Ablating Concepts attention-processor names -> plain attention names.
_PROCESSOR_NAMES = {
    ".processor.to_k_custom_diffusion.": ".to_k.", ".processor.to_v_custom_diffusion.": ".to_v.",
    ".processor.to_q_custom_diffusion.": ".to_q.",
    ".processor.to_out_custom_diffusion.0.": ".to_out.0.",
}
# diffusers < 0.14 VAE attention names.
_OLD_ATTENTION = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and any(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap(obj: Any) -> Any:
    """Strip container levels around a state dict: a top-level ``state_dict`` (Lightning/CompVis),
    or a lone ``model``/``module``/``params``/``weights`` entry holding the tensors."""
    while isinstance(obj, dict) and not is_tensor_dict(obj):
        if isinstance(obj.get("state_dict"), dict):
            obj = obj["state_dict"]
            continue
        inner = [k for k in _WRAPPERS if isinstance(obj.get(k), dict)]
        if len(inner) == 1 and not any(isinstance(obj.get(g), dict) for g in DELTA_GROUPS):
            obj = obj[inner[0]]
            continue
        break
    return obj


def strip_module_prefix(keys: Iterable[str]) -> dict[str, str]:
    """``{new: old}`` dropping a DataParallel ``module.`` prefix carried by every key."""
    keys = list(keys)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module."):]: k for k in keys}
    return {k: k for k in keys}


def has_lora(keys: Iterable[str]) -> bool:
    return any(any(m in k for m in _LORA_MARKS) for k in keys)


def normalise_diffusers_keys(sd: dict[str, torch.Tensor], warnings: list[str]) -> dict[str, torch.Tensor]:
    """Rename ``module.``-prefixed, PEFT-wrapped and attention-processor keys to plain diffusers
    names (appending a note to ``warnings`` for each renaming applied)."""
    renamed = {new: sd[old] for new, old in strip_module_prefix(sd).items()}
    if len(renamed) and any(k.startswith("module.") for k in sd):
        warnings.append("stripped the DataParallel 'module.' prefix from every key")
    if any(".base_layer." in k for k in renamed):
        if has_lora(renamed):
            raise UnsupportedCheckpointError(
                "this checkpoint holds unmerged PEFT LoRA factors (base_layer + lora_A/lora_B); "
                "memtui cannot apply LoRA adapters yet. Merge them first (peft's merge_and_unload()) "
                "and save the merged model's state dict.")
        renamed = {k.replace(".base_layer.", "."): v for k, v in renamed.items()}
        warnings.append("stripped PEFT '.base_layer' from key names (no LoRA factors present)")
    out: dict[str, torch.Tensor] = {}
    hit = False
    for k, v in renamed.items():
        for old, new in _PROCESSOR_NAMES.items():
            if old in k:
                k, hit = k.replace(old, new), True
        out[k] = v
    if hit:
        warnings.append("renamed Custom-Diffusion attention-processor keys to to_q/to_k/to_v/to_out")
    return out


def normalise_vae_keys(sd: dict[str, torch.Tensor], module_keys: set[str]) -> dict[str, torch.Tensor]:
    """Map pre-0.14 diffusers VAE attention names (query/key/value/proj_attn) to current ones."""
    out = {}
    for k, v in sd.items():
        if k not in module_keys and ".attentions." in k:
            for old, new in _OLD_ATTENTION.items():
                k = k.replace(old, new)
        out[k] = v
    return out


def normalise_text_keys(sd: dict[str, torch.Tensor], module_keys: set[str]) -> dict[str, torch.Tensor]:
    """CLIP text-encoder keys in the convention of the module (with or without ``text_model.``);
    the ``position_ids`` buffer of older checkpoints is dropped."""
    sd = {new: sd[old] for new, old in strip_module_prefix(sd).items()}
    prefixed = any(k.startswith("text_model.") for k in module_keys)
    out = {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue
        bare = k[len("text_model."):] if k.startswith("text_model.") else k
        out["text_model." + bare if prefixed else bare] = v
    return out


def looks_like_text_encoder(keys: Iterable[str]) -> bool:
    keys = [k for k in keys if not k.endswith("position_ids")]
    return bool(keys) and (any(k.startswith("text_model.") for k in keys)
                           or all(k.startswith(TEXT_PREFIXES) for k in keys)) \
        and any("token_embedding" in k or ".self_attn." in k or "final_layer_norm" in k for k in keys)


def looks_like_flux_transformer(keys: Iterable[str]) -> bool:
    """A Flux transformer state dict (or part of one): keys only a Flux transformer has, in
    diffusers or BFL names, optionally under a ``transformer.`` prefix."""
    return any(k.removeprefix("transformer.").startswith(FLUX_MARKERS) for k in keys)


def normalise_flux_keys(sd: dict[str, torch.Tensor], warnings: list[str]) -> dict[str, torch.Tensor]:
    """Flux transformer keys in diffusers' names: a ``transformer.`` prefix dropped, original BFL
    keys (``double_blocks.*``) converted with diffusers' single-file converter."""
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    if any(k.startswith(FLUX_BFL_PREFIXES) for k in sd):
        from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

        n = len(sd)
        try:
            sd = convert_flux_transformer_checkpoint_to_diffusers(dict(sd))
        except (IndexError, KeyError, ValueError, RuntimeError) as exc:
            raise UnsupportedCheckpointError(
                f"these {n} Flux tensors use the original BFL names (double_blocks.*, single_blocks.*), and "
                f"diffusers' converter cannot map them ({type(exc).__name__}: {exc}); it needs a whole "
                "transformer. Save the erased weights under diffusers' names (transformer_blocks.*) instead.") from None
        warnings.append(f"converted {n} BFL-format Flux keys (double_blocks.*) to diffusers names")
    return sd


LORA_FACTORS = (".lora_A.", ".lora_B.", ".lora.down.", ".lora.up.")
DIFFUSERS_LORA_PREFIXES = ("unet.", "transformer.", "text_encoder.", "text_encoder_2.")


def looks_like_diffusers_lora(keys: Iterable[str]) -> bool:
    """A LoRA in diffusers / PEFT format (``save_lora_weights``): ``lora_A``/``lora_B`` (or
    ``lora.down``/``lora.up``) factors named by the module they adapt, with no ``base_layer``
    weights (that is an unmerged PEFT model, not an adapter file)."""
    keys = list(keys)
    return (any(f in k for k in keys for f in LORA_FACTORS) and not any(".base_layer." in k for k in keys)
            and not any(k.startswith(("lora_unet_", "lora_te")) for k in keys))


def lora_base_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, tuple[int, ...]]]:
    """Component -> ``{adapted weight key: (out, in)}`` (0 where the file lacks that factor) of a diffusers-format LoRA: each
    ``…X.lora_A.weight [r, in]`` / ``lora_B [out, r]`` pair read as the base weight ``…X.weight``
    it adapts (what :func:`memtui.engine.model.families.checkpoint_families` reads). Keys without a
    component prefix are the denoiser's (``unet``)."""
    out: dict[str, dict[str, list[int]]] = {}
    for key, shape in shapes.items():
        comp, _, rest = key.partition(".")
        if comp + "." not in DIFFUSERS_LORA_PREFIXES:
            comp, rest = "unet", key
        for a, b in ((".lora_A.", "A"), (".lora_B.", "B"), (".lora.down.", "A"), (".lora.up.", "B")):
            if a in rest and len(shape) == 2:
                base = rest.split(a)[0] + ".weight"
                cur = out.setdefault(comp, {}).setdefault(base, [0, 0])
                cur[1 if b == "A" else 0] = int(shape[1] if b == "A" else shape[0])
    return {c: {k: tuple(v) for k, v in d.items()} for c, d in out.items()}


def looks_like_unet(keys: Iterable[str]) -> bool:
    return any(k.startswith(UNET_FAMILIES) for k in keys)


def unet_is_complete(keys: Iterable[str], base_keys: Iterable[str] | None = None) -> bool:
    """Whether a diffusers-keyed UNet state dict is complete: against ``base_keys`` when given
    (exact), else heuristically (every block family present and every transformer block / resnet
    found holds all of its main layers)."""
    keys = set(keys)
    if base_keys is not None:
        return set(base_keys) <= keys
    if not all(any(k.startswith(f) for k in keys) for f in UNET_FAMILIES):
        return False
    blocks = {k.split(".transformer_blocks.")[0] + ".transformer_blocks." + k.split(".transformer_blocks.")[1].split(".")[0]
              for k in keys if ".transformer_blocks." in k}
    needed = ("attn1.to_q.weight", "attn2.to_k.weight", "attn2.to_v.weight", "ff.net.2.weight", "norm1.weight")
    if any(f"{b}.{n}" not in keys for b in blocks for n in needed):
        return False
    resnets = {k.rsplit(".", 2)[0] for k in keys if ".resnets." in k and k.endswith(".conv1.weight")}
    all_resnets = {".".join(k.split(".")[:k.split(".").index("resnets") + 2]) for k in keys if ".resnets." in k}
    return all_resnets <= resnets
