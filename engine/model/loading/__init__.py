"""Offline model loading: base Stable Diffusion pipelines (folder or cached repo id) and ablated
("concept-erased") checkpoints of every released kind, detected from content, with a report of what
changed. Weight files are read safely (safetensors, or ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

from memtui.engine.model.loading.ablated import checkpoint_problems, load_ablated
from memtui.engine.model.loading.base import (hf_cache_dir, load_base, pipeline_problems, resolve_cached_repo, resolve_checkpoint_path,
                   resolve_pipeline_dir)
from memtui.engine.model.loading.detect import CheckpointKind, detect_kind, inspect_checkpoint
from memtui.engine.model.loading.errors import (CheckpointMismatchError, CorruptCheckpointError, LoadingError, ModelNotFoundError, UnsafeCheckpointError,
                     UnsupportedCheckpointError)
from memtui.engine.model.loading.report import LoadReport
from memtui.engine.model.loading.safeload import load_file
from memtui.engine.model.loading.save import save_pipeline

__all__ = [
    "CheckpointKind", "CheckpointMismatchError", "CorruptCheckpointError", "LoadReport", "LoadingError", "ModelNotFoundError",
    "UnsafeCheckpointError", "UnsupportedCheckpointError", "detect_kind", "hf_cache_dir",
    "inspect_checkpoint", "load_ablated", "load_base", "load_file", "resolve_cached_repo",
    "resolve_checkpoint_path",
    "resolve_pipeline_dir", "save_pipeline", "checkpoint_problems", "pipeline_problems",
]
