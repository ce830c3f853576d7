"""Detect what kind of checkpoint a path holds, from its content (not its name), and describe it
cheaply for the console's browser.

The kinds, their cues, components and readers are the rows of
:data:`memtui.engine.model.loading.kinds.KINDS`; :func:`probe` tries them in order (a folder's
cues, then, for a folder holding a single weight file or for a file, the file cues).
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any

import torch

from memtui.engine.model.loading.errors import UnsupportedCheckpointError
from memtui.engine.model.loading.kinds import BY_NAME, KINDS, FileCues, Probe
from memtui.engine.model.loading.safeload import file_size, is_weight_file, iter_tensors, load_file, safetensors_header


class _KindBase(str, Enum):
    def __str__(self) -> str:
        return self.value


# ``CheckpointKind.UNET_FULL == "unet_full"``: one member per row of KINDS, in detection order.
CheckpointKind = _KindBase("CheckpointKind", [(k.name.upper(), k.name) for k in KINDS])  # type: ignore[misc]
CheckpointKind.__module__ = __name__

ADAPTER_KINDS = tuple(CheckpointKind(k.name) for k in KINDS if not k.loadable)  # recognised, not loadable


def _file_index(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, str], Any]:
    """Flat ``{key: (shape, dtype)}``, metadata and (pickles only) the loaded object of one file."""
    if path.name.lower().endswith(".safetensors"):
        info, meta = safetensors_header(path)
        return info, meta, None
    raw = load_file(path)
    info = {k: (tuple(t.shape), str(t.dtype).replace("torch.", "")) for k, t in iter_tensors(raw)}
    return info, {}, raw


def probe(path: str | Path, base_keys: set[str] | None = None) -> Probe:
    """Detect the kind of checkpoint at ``path`` (file or folder). ``base_keys``: the base UNet's
    state-dict keys, to decide full vs partial exactly. Reads safetensors headers only; pickles are
    memory-mapped where possible."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.is_dir():
        for kind in KINDS:
            files = kind.folder(path) if kind.folder is not None else None
            if files is not None:
                return Probe(path, CheckpointKind(kind.name), files)
        weights = sorted(p for p in path.iterdir() if is_weight_file(p))
        if len(weights) == 1:
            return probe(weights[0], base_keys)
        raise UnsupportedCheckpointError(
            f"{path}: a folder with no model_index.json, no UNet/CLIP config.json and "
            f"{len(weights)} weight files; point memtui at the pipeline folder or at one weight file")
    if not is_weight_file(path):
        raise UnsupportedCheckpointError(f"{path}: not a weight file (.safetensors/.pt/.bin/.ckpt/.pth)")
    index, meta, raw = _file_index(path)
    cues = FileCues(path, index, meta, raw, base_keys)
    for kind in KINDS:
        if kind.file is not None and kind.file(cues):
            return Probe(path, CheckpointKind(kind.name), {"file": [path]}, index, meta, raw)
    keys = cues.keys
    raise UnsupportedCheckpointError(
        f"{path}: could not tell what this checkpoint holds ({len(keys)} tensors, e.g. "
        f"{', '.join(keys[:3])}); expected diffusers UNet keys (down_blocks.*), Flux transformer keys "
        "(transformer_blocks.*, double_blocks.*), CompVis keys (model.diffusion_model.*), CLIP text keys "
        "(text_model.*), a diffusers LoRA (lora_A/lora_B) or a delta dict (unet/text_encoder)")


def detect_kind(path: str | Path, base: torch.nn.Module | set[str] | None = None) -> CheckpointKind:
    """The :class:`CheckpointKind` of ``path``, from its content. ``base``: the base UNet (or its
    key set) to decide full vs partial UNet exactly; without it all block families must be present
    (and every attention/resnet block complete) for "unet_full"."""
    base_keys = set(base.state_dict()) if isinstance(base, torch.nn.Module) else base
    return probe(path, base_keys).kind


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
            "n_tensors": len(index), "components": BY_NAME[p.kind.value].components(p), "dtypes": dtypes,
            "metadata": dict(p.metadata), "family": _family(p.path, p.kind.value, index)}


def _family(path: Path, kind: str, index: dict[str, Any]) -> str:
    """The model family of a pipeline folder (from model_index.json), or the families a checkpoint's
    UNet keys fit, joined by "|" ("sd2|sdxl"); "?" when they cannot tell."""
    from memtui.engine.model.families import checkpoint_families, detect_family

    if kind == "pipeline":
        try:
            return detect_family(path).name
        except Exception:  # noqa: BLE001 - an unsupported or damaged pipeline: the kind says enough
            return "?"
    shapes = {k.split("/", 1)[-1]: tuple(v[0]) for k, v in index.items() if not k.startswith(("text_encoder", "vae/"))}
    if kind == "lora":
        from memtui.engine.model.loading.keys import lora_base_shapes

        parts = lora_base_shapes(shapes)
        shapes = parts.get("transformer") or parts.get("unet") or {}
    fams = checkpoint_families(shapes) if shapes else set()
    return "|".join(sorted(fams)) if fams else "?"
