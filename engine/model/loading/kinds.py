"""The checkpoint kinds memtui reads, as one ordered registry: each row is a kind's name, the cue
that recognises it (in a folder, in a single weight file, or both), the components it holds and
the reader that turns it into state dicts (``None`` for kinds recognised but not loadable yet).

Detection (:func:`memtui.engine.model.loading.detect.probe`) tries the rows in order and takes the
first whose cue matches, so a more specific cue comes before a more general one (an eraser config
beside a file before the file's keys, CompVis keys before diffusers UNet keys). Cues read content,
not names (peers.md §3). **Adding a kind is adding one row to** :data:`KINDS` (with its cue and
reader, written here); ``CheckpointKind``, detection, ``inspect_checkpoint`` and ``load_ablated``
follow from the row.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from memtui.engine.model.loading import compvis
from memtui.engine.model.loading import keys as K
from memtui.engine.model.loading.errors import UnsupportedCheckpointError
from memtui.engine.model.loading.safeload import (DIFFUSERS_WEIGHTS, TRANSFORMERS_WEIGHTS, folder_weight_files,
                                                  is_weight_file, iter_tensors, load_file)

if TYPE_CHECKING:
    from memtui.engine.model.pipeline import SDPipeline

StateDicts = dict[str, dict[str, torch.Tensor]]  # component ("unet", "text_encoder", "vae") -> state dict


@dataclass
class Probe:
    """What detection found: the kind (a ``CheckpointKind``), the weight files by component, the
    flat tensor index ``{key: (shape, dtype)}`` of a single-file checkpoint (empty for folders),
    its metadata, and the loaded object for pickles (so the reader does not read the file twice)."""

    path: Path
    kind: Any
    files: dict[str, list[Path]] = field(default_factory=dict)
    index: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    raw: Any = None


@dataclass
class FileCues:
    """One weight file as the file cues see it; the key lists are computed once, on first use."""

    path: Path
    index: dict[str, tuple[tuple[int, ...], str]]
    metadata: dict[str, str]
    raw: Any
    base_keys: set[str] | None = None

    @cached_property
    def inner(self) -> Any:
        """The unwrapped pickle (None for safetensors)."""
        return K.unwrap(self.raw) if self.raw is not None else None

    @cached_property
    def keys(self) -> list[str]:
        """The file's tensor names (UnsupportedCheckpointError when it holds none)."""
        if self.raw is not None:
            keys = [k for k, _ in iter_tensors(self.inner)] if isinstance(self.inner, dict) else []
        else:
            keys = list(self.index)
        if not keys:
            raise UnsupportedCheckpointError(f"{self.path}: holds no tensors")
        return keys

    @cached_property
    def names(self) -> list[str]:
        """The tensor names without a DataParallel ``module.`` prefix."""
        return list(K.strip_module_prefix(self.keys))


@dataclass(frozen=True)
class Kind:
    """One checkpoint kind. ``folder(path)`` returns the weight files by component when the folder
    is of this kind (else None); ``file(cues)`` says whether a single weight file is;
    ``components(probe)`` names what it holds; ``read(probe, pipe, warnings)`` returns its state
    dicts in the checkpoint's own key names (the loader normalises them), or is None when the
    kind is recognised but not loadable, ``unsupported(probe)`` then saying why. An adapter that
    is not a state dict (a LoRA) has ``apply(probe, pipe, settings)`` instead of ``read``: it
    patches the pipeline itself and returns the ``LoadReport`` (``settings``: ``lora_scale``,
    ``lora_fuse``)."""

    name: str
    summary: str
    components: Callable[[Probe], list[str]]
    folder: Callable[[Path], dict[str, list[Path]] | None] | None = None
    file: Callable[[FileCues], bool] | None = None
    read: Callable[[Probe, SDPipeline, list[str]], StateDicts] | None = None
    unsupported: Callable[[Probe], str] | None = None
    apply: Callable[[Probe, Any, dict[str, Any]], Any] | None = None

    @property
    def loadable(self) -> bool:
        return self.read is not None or self.apply is not None


# --------------------------------------------------------------------------- shared pieces

def _config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _flat(obj: object) -> dict[str, torch.Tensor]:
    return dict(iter_tensors(K.unwrap(obj)))


def _read_files(files: list[Path]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(_flat(load_file(f)))
    return out


def _single(component: str) -> Callable[[Probe, Any, list[str]], StateDicts]:
    """Reader of a single file holding one component's state dict."""
    def read(p: Probe, pipe: Any, warnings: list[str]) -> StateDicts:
        return {component: _flat(p.raw) if p.raw is not None else _read_files([p.path])}
    return read


def _folders(p: Probe, pipe: Any, warnings: list[str]) -> StateDicts:
    """Reader of diffusers/transformers folders: every component's weight files."""
    parts = {}
    for comp, files in p.files.items():
        if not files:
            raise UnsupportedCheckpointError(f"{p.path}: the {comp} folder holds no weight file")
        parts[comp] = _read_files(files)
    return parts


def _fixed(*components: str) -> Callable[[Probe], list[str]]:
    return lambda p: list(components)


# --------------------------------------------------------------------------- the kinds

def _pipeline_folder(path: Path) -> dict[str, list[Path]] | None:
    if not (path / "model_index.json").is_file():
        return None
    files = {c: folder_weight_files(path / c, names) for c, names in
             (("unet", DIFFUSERS_WEIGHTS), ("transformer", DIFFUSERS_WEIGHTS), ("text_encoder", TRANSFORMERS_WEIGHTS),
              ("text_encoder_2", TRANSFORMERS_WEIGHTS), ("vae", DIFFUSERS_WEIGHTS))}
    return {c: f for c, f in files.items() if f}


def _receler_folder(path: Path) -> dict[str, list[Path]] | None:
    if not (path / "eraser_config.json").is_file():
        return None
    return {"adapter": sorted(p for p in path.iterdir() if is_weight_file(p))}


def _receler_unsupported(p: Probe) -> str:
    return (f"Receler erasers are not supported yet: {p.path} holds eraser adapters injected after each "
            "cross-attention (eraser_config.json); they are not plain UNet weights and cannot be loaded.")


def _unet_folder(path: Path) -> dict[str, list[Path]] | None:
    if _config(path / "config.json").get("_class_name") != "UNet2DConditionModel":
        return None
    return {"unet": folder_weight_files(path, DIFFUSERS_WEIGHTS)}


def _transformer_folder(path: Path) -> dict[str, list[Path]] | None:
    if _config(path / "config.json").get("_class_name") != "FluxTransformer2DModel":
        return None
    return {"transformer": folder_weight_files(path, DIFFUSERS_WEIGHTS)}


def _read_transformer(p: Probe, pipe: Any, warnings: list[str]) -> StateDicts:
    """A Flux transformer state dict (file or folder), in diffusers' key names."""
    sd = _folders(p, pipe, warnings)["transformer"] if p.files.get("transformer") else (
        _flat(p.raw) if p.raw is not None else _read_files([p.path]))
    return {"transformer": K.normalise_flux_keys(sd, warnings)}


def _is_lora(c: FileCues) -> bool:
    return K.looks_like_diffusers_lora(c.names) and not any(m in c.metadata for m in SPM_METADATA)


def _apply_lora(p: Probe, pipe: Any, settings: dict[str, Any]) -> Any:
    from memtui.engine.model.loading.lora import apply_lora

    return apply_lora(p, pipe, scale=float(settings.get("lora_scale", 1.0)), fuse=bool(settings.get("lora_fuse", True)))


def _lora_components(p: Probe) -> list[str]:
    return sorted(K.lora_base_shapes({k: v[0] for k, v in p.index.items()}))


def _text_encoder_folder(path: Path) -> dict[str, list[Path]] | None:
    cfg = _config(path / "config.json")
    if not ("CLIPTextModel" in (cfg.get("architectures") or []) or cfg.get("model_type") == "clip_text_model"):
        return None
    return {"text_encoder": folder_weight_files(path, TRANSFORMERS_WEIGHTS)}


def _is_delta(c: FileCues) -> bool:
    return isinstance(c.inner, dict) and any(isinstance(c.inner.get(g), dict) for g in K.DELTA_GROUPS)


def _delta_components(p: Probe) -> list[str]:
    inner = K.unwrap(p.raw)
    return [g for g in K.DELTA_GROUPS if isinstance(inner.get(g), dict) and inner[g]]


def _read_delta(p: Probe, pipe: Any, warnings: list[str]) -> StateDicts:
    inner = K.unwrap(p.raw)
    parts = {g: dict(iter_tensors(inner[g])) for g in _delta_components(p)}
    other = [k for k in inner if k not in K.DELTA_GROUPS]
    if other:
        warnings.append(f"ignored top-level entries of the delta dict: {', '.join(map(str, other))}")
    return parts


def _is_compvis(c: FileCues) -> bool:
    return any(k.startswith(K.LDM_UNET_PREFIX) or f".{K.LDM_UNET_PREFIX}" in k for k in c.keys)


def _compvis_components(p: Probe) -> list[str]:
    out = []
    for name, prefixes in (("unet", (K.LDM_UNET_PREFIX,)), ("text_encoder", K.LDM_TEXT_PREFIXES),
                           ("vae", (K.LDM_VAE_PREFIX,))):
        if any(any(k.startswith(pf) or f".{pf}" in k for pf in prefixes) for k in p.index):
            out.append(name)
    return out


def _read_compvis(p: Probe, pipe: SDPipeline, warnings: list[str]) -> StateDicts:
    sd = _flat(p.raw) if p.raw is not None else _read_files([p.path])
    groups = compvis.split_ldm(sd)
    parts = {}
    if groups["unet"]:
        parts["unet"] = compvis.convert_unet(groups["unet"], dict(pipe.unet.config), warnings)
    if groups["text_encoder"]:
        parts["text_encoder"] = compvis.convert_text_encoder(groups["text_encoder"])
    if groups["vae"]:
        warnings.append(f"the checkpoint's VAE ({len(groups['vae'])} first_stage_model.* tensors) was "
                        "not loaded: erasure methods leave the VAE unchanged; the base VAE is used")
    return parts


SPM_METADATA = ("rank", "alpha", "lora_rank", "network_dim", "ss_network_dim", "network_alpha", "prompts")


def _is_spm(c: FileCues) -> bool:
    peft = any(".base_layer." in k for k in c.names)
    return (K.has_lora(c.names) and not peft) or any(m in c.metadata for m in SPM_METADATA)


def _spm_unsupported(p: Probe) -> str:
    meta = ", ".join(f"{k}={v}" for k, v in p.metadata.items() if k in ("rank", "alpha")) or "LoRA keys"
    return (f"SPM adapters are not supported yet: {p.path} is a LoRA-style adapter ({meta}). Merge it "
            "into the UNet weights and save the merged UNet state dict (diffusers keys) to load it "
            "as a full UNet checkpoint.")


def _unet_complete(c: FileCues) -> bool:
    return K.unet_is_complete([k.replace(".base_layer.", ".") for k in c.names], c.base_keys)


KINDS: tuple[Kind, ...] = (
    Kind("pipeline", "a diffusers pipeline folder (model_index.json)",
         components=lambda p: sorted(p.files), folder=_pipeline_folder, read=_folders),
    Kind("receler", "a Receler eraser (eraser_config.json in the folder or beside the file)",
         components=_fixed("adapter"), folder=_receler_folder,
         file=lambda c: (c.path.parent / "eraser_config.json").is_file(), unsupported=_receler_unsupported),
    Kind("unet_folder", "a diffusers UNet folder (config.json of a UNet2DConditionModel)",
         components=_fixed("unet"), folder=_unet_folder, read=_folders),
    Kind("transformer_folder", "a diffusers Flux transformer folder (config.json of a FluxTransformer2DModel)",
         components=_fixed("transformer"), folder=_transformer_folder, read=_read_transformer),
    Kind("text_encoder_folder", "a transformers CLIP text-encoder folder (config.json of a CLIPTextModel)",
         components=_fixed("text_encoder"), folder=_text_encoder_folder, read=_folders),
    Kind("delta", "an Ablating-Concepts delta dict (top-level unet / text_encoder tables)",
         components=_delta_components, file=_is_delta, read=_read_delta),
    Kind("compvis", "a CompVis/LDM single-file checkpoint (model.diffusion_model.* keys)",
         components=_compvis_components, file=_is_compvis, read=_read_compvis),
    Kind("lora", "a LoRA adapter in diffusers/PEFT format (lora_A/lora_B factors; applied with load_lora_weights)",
         components=_lora_components, file=_is_lora, apply=_apply_lora),
    Kind("spm", "an SPM LoRA adapter (lora_* keys, or rank/alpha metadata)",
         components=_fixed("adapter"), file=_is_spm, unsupported=_spm_unsupported),
    Kind("transformer", "a Flux transformer state dict, whole or partial (diffusers or BFL keys)",
         components=_fixed("transformer"), file=lambda c: K.looks_like_flux_transformer(c.names), read=_read_transformer),
    Kind("text_encoder", "a CLIP text-encoder state dict (text_model.* keys)",
         components=_fixed("text_encoder"), file=lambda c: K.looks_like_text_encoder(c.names),
         read=_single("text_encoder")),
    Kind("unet_full", "a complete diffusers-keyed UNet state dict",
         components=_fixed("unet"), file=lambda c: K.looks_like_unet(c.names) and _unet_complete(c),
         read=_single("unet")),
    Kind("unet_partial", "part of a diffusers-keyed UNet state dict (e.g. ESD-x: cross-attention only)",
         components=_fixed("unet"), file=lambda c: K.looks_like_unet(c.names), read=_single("unet")),
)

BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}

__all__ = ["BY_NAME", "FileCues", "KINDS", "Kind", "Probe", "SPM_METADATA", "StateDicts"]
