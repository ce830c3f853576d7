"""Detect what kind of checkpoint a path holds, from its content (not its name), and describe it
cheaply for the console's browser.

Cues (peers.md §3): ``model_index.json`` -> pipeline; ``config.json`` of a UNet2DConditionModel ->
unet_folder, of a CLIPTextModel -> text_encoder_folder; ``eraser_config.json`` in the folder or
beside the file -> receler; LoRA keys (``lora_…``) or safetensors metadata with rank/alpha -> spm;
``model.diffusion_model.*`` (possibly under ``state_dict``) -> compvis; top-level ``unet`` /
``text_encoder`` dicts -> delta (Ablating Concepts ``delta.bin``); CLIP ``text_model.*`` keys ->
text_encoder; diffusers UNet keys -> unet_full or unet_partial.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from memtui.engine.model.loading import keys as K
from memtui.engine.model.loading.errors import UnsupportedCheckpointError
from memtui.engine.model.loading.safeload import (DIFFUSERS_WEIGHTS, TRANSFORMERS_WEIGHTS, file_size, folder_weight_files,
                       is_weight_file, iter_tensors, load_file, safetensors_header)


class CheckpointKind(str, Enum):
    PIPELINE = "pipeline"
    UNET_FOLDER = "unet_folder"
    UNET_FULL = "unet_full"
    UNET_PARTIAL = "unet_partial"
    COMPVIS = "compvis"
    DELTA = "delta"
    TEXT_ENCODER = "text_encoder"
    TEXT_ENCODER_FOLDER = "text_encoder_folder"
    SPM = "spm"
    RECELER = "receler"

    def __str__(self) -> str:
        return self.value


ADAPTER_KINDS = (CheckpointKind.SPM, CheckpointKind.RECELER)
_SPM_META = ("rank", "alpha", "lora_rank", "network_dim", "ss_network_dim", "network_alpha", "prompts")


@dataclass
class Probe:
    """What :func:`probe` found: the kind, the weight files by component, the flat tensor index
    ``{key: (shape, dtype)}`` of a single-file checkpoint (empty for folders), its metadata, and
    the loaded object for pickles (so the loader does not read the file twice)."""

    path: Path
    kind: CheckpointKind
    files: dict[str, list[Path]] = field(default_factory=dict)
    index: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    raw: Any = None


def _config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _is_unet_config(cfg: dict[str, Any]) -> bool:
    return cfg.get("_class_name") == "UNet2DConditionModel"


def _is_text_config(cfg: dict[str, Any]) -> bool:
    return "CLIPTextModel" in (cfg.get("architectures") or []) or cfg.get("model_type") == "clip_text_model"


def _file_index(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, str], Any]:
    """Flat ``{key: (shape, dtype)}``, metadata and (pickles only) the loaded object of one file."""
    if path.name.lower().endswith(".safetensors"):
        info, meta = safetensors_header(path)
        return info, meta, None
    raw = load_file(path)
    info = {k: (tuple(t.shape), str(t.dtype).replace("torch.", "")) for k, t in iter_tensors(raw)}
    return info, {}, raw


def _kind_of_file(path: Path, index: dict[str, Any], meta: dict[str, str], raw: Any,
                  base_keys: set[str] | None) -> CheckpointKind:
    if (path.parent / "eraser_config.json").is_file():
        return CheckpointKind.RECELER
    if raw is not None:
        inner = K.unwrap(raw)
        if isinstance(inner, dict) and any(isinstance(inner.get(g), dict) for g in K.DELTA_GROUPS):
            return CheckpointKind.DELTA
        keys = [k for k, _ in iter_tensors(inner)] if isinstance(inner, dict) else []
    else:
        keys = list(index)
    if not keys:
        raise UnsupportedCheckpointError(f"{path}: holds no tensors")
    if any(k.startswith(K.LDM_UNET_PREFIX) or f".{K.LDM_UNET_PREFIX}" in k for k in keys):
        return CheckpointKind.COMPVIS
    names = list(K.strip_module_prefix(keys))
    peft = any(".base_layer." in k for k in names)
    if (K.has_lora(names) and not peft) or any(m in meta for m in _SPM_META):
        return CheckpointKind.SPM
    if K.looks_like_text_encoder(names):
        return CheckpointKind.TEXT_ENCODER
    if K.looks_like_unet(names):
        names = [k.replace(".base_layer.", ".") for k in names]
        full = K.unet_is_complete(names, base_keys)
        return CheckpointKind.UNET_FULL if full else CheckpointKind.UNET_PARTIAL
    raise UnsupportedCheckpointError(
        f"{path}: could not tell what this checkpoint holds ({len(keys)} tensors, e.g. "
        f"{', '.join(keys[:3])}); expected diffusers UNet keys (down_blocks.*), CompVis keys "
        "(model.diffusion_model.*), CLIP text keys (text_model.*), or a delta dict (unet/text_encoder)")


def probe(path: str | Path, base_keys: set[str] | None = None) -> Probe:
    """Detect the kind of checkpoint at ``path`` (file or folder). ``base_keys``: the base UNet's
    state-dict keys, to decide full vs partial exactly. Reads safetensors headers only; pickles are
    memory-mapped where possible."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.is_dir():
        if (path / "model_index.json").is_file():
            files = {c: folder_weight_files(path / c, names) for c, names in
                     (("unet", DIFFUSERS_WEIGHTS), ("text_encoder", TRANSFORMERS_WEIGHTS), ("vae", DIFFUSERS_WEIGHTS))}
            return Probe(path, CheckpointKind.PIPELINE, {c: f for c, f in files.items() if f})
        if (path / "eraser_config.json").is_file():
            return Probe(path, CheckpointKind.RECELER, {"adapter": sorted(p for p in path.iterdir() if is_weight_file(p))})
        cfg = _config(path / "config.json")
        if _is_unet_config(cfg):
            return Probe(path, CheckpointKind.UNET_FOLDER, {"unet": folder_weight_files(path, DIFFUSERS_WEIGHTS)})
        if _is_text_config(cfg):
            return Probe(path, CheckpointKind.TEXT_ENCODER_FOLDER,
                         {"text_encoder": folder_weight_files(path, TRANSFORMERS_WEIGHTS)})
        weights = sorted(p for p in path.iterdir() if is_weight_file(p))
        if len(weights) == 1:
            return probe(weights[0], base_keys)
        raise UnsupportedCheckpointError(
            f"{path}: a folder with no model_index.json, no UNet/CLIP config.json and "
            f"{len(weights)} weight files; point memtui at the pipeline folder or at one weight file")
    if not is_weight_file(path):
        raise UnsupportedCheckpointError(f"{path}: not a weight file (.safetensors/.pt/.bin/.ckpt/.pth)")
    index, meta, raw = _file_index(path)
    kind = _kind_of_file(path, index, meta, raw, base_keys)
    return Probe(path, kind, {"file": [path]}, index, meta, raw)


def detect_kind(path: str | Path, base: torch.nn.Module | set[str] | None = None) -> CheckpointKind:
    """The :class:`CheckpointKind` of ``path``, from its content. ``base``: the base UNet (or its
    key set) to decide full vs partial UNet exactly; without it all block families must be present
    (and every attention/resnet block complete) for "unet_full"."""
    base_keys = set(base.state_dict()) if isinstance(base, torch.nn.Module) else base
    return probe(path, base_keys).kind


def _components(p: Probe) -> list[str]:
    if p.kind in (CheckpointKind.PIPELINE,):
        return sorted(p.files)
    if p.kind in (CheckpointKind.UNET_FOLDER, CheckpointKind.UNET_FULL, CheckpointKind.UNET_PARTIAL):
        return ["unet"]
    if p.kind in (CheckpointKind.TEXT_ENCODER, CheckpointKind.TEXT_ENCODER_FOLDER):
        return ["text_encoder"]
    if p.kind is CheckpointKind.DELTA:
        inner = K.unwrap(p.raw)
        return [g for g in K.DELTA_GROUPS if isinstance(inner.get(g), dict) and inner[g]]
    if p.kind is CheckpointKind.COMPVIS:
        out = []
        for name, prefixes in (("unet", (K.LDM_UNET_PREFIX,)), ("text_encoder", K.LDM_TEXT_PREFIXES),
                               ("vae", (K.LDM_VAE_PREFIX,))):
            if any(any(k.startswith(pf) or f".{pf}" in k for pf in prefixes) for k in p.index):
                out.append(name)
        return out
    return ["adapter"]


def inspect_checkpoint(path: str | Path) -> dict[str, Any]:
    """A cheap JSON-ready description: ``kind``, ``path``, ``size_bytes`` (on disk), ``n_tensors``,
    ``components``, ``dtypes`` (tensor counts per dtype; empty when not read) and ``metadata``.
    Needs no base model; for safetensors only headers are read."""
    p = probe(path)
    index = dict(p.index)
    if not index:
        for comp, files in p.files.items():
            for f in files:
                if f.name.endswith(".safetensors"):
                    info, _ = safetensors_header(f)
                else:
                    info = {k: (tuple(t.shape), str(t.dtype).replace("torch.", ""))
                            for k, t in iter_tensors(load_file(f))}
                index.update({f"{comp}/{k}": v for k, v in info.items()})
    dtypes: dict[str, int] = {}
    for _, dt in index.values():
        dtypes[dt] = dtypes.get(dt, 0) + 1
    return {"kind": p.kind.value, "path": str(p.path), "size_bytes": file_size(p.path),
            "n_tensors": len(index), "components": _components(p), "dtypes": dtypes,
            "metadata": dict(p.metadata)}
