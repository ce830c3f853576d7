"""Concept detectors behind one interface (:class:`Detector`), loaded by kind from local files only.

Each kind is one module of this package that declares a literal ``DETECTOR`` table (kind, summary,
needs_path, default_concept, order) and a ``load(path, **options)`` function; the registry
(:mod:`memtui.engine.detectors.registry`) reads the tables without importing the modules, so
optional packages such as onnxruntime are only needed for the detector that uses them. The kinds
today: ``demo`` (ships with memtui), ``nudenet``, ``imagenet``, ``style``, ``clip``.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from memtui.engine.detectors.base import Detection, Detector, DetectorError
from memtui.engine.detectors.registry import detector_kinds

# kind -> "module:function" that loads it (derived from the modules' DETECTOR tables)
DETECTOR_KINDS: dict[str, str] = {k: f"{d.module}:load" for k, d in detector_kinds().items()}


def load_detector(kind: str, path: str | Path | None = None, **options: Any) -> Detector:
    """Load a detector of ``kind`` from the local ``path`` (file or folder; ``None`` only for
    kinds that ship with memtui). Raises :class:`DetectorError` with a clear message if the kind
    is unknown, its file is missing, or an optional package is not installed."""
    if kind not in DETECTOR_KINDS:
        raise DetectorError(f"unknown detector kind {kind!r}; known kinds: {', '.join(DETECTOR_KINDS)}")
    if path is not None and not Path(path).exists():
        raise DetectorError(f"{kind} detector: {path} does not exist")
    module_name, func = DETECTOR_KINDS[kind].split(":")
    try:
        module = importlib.import_module(module_name, __name__)
    except ModuleNotFoundError as exc:
        raise DetectorError(f"{kind} detector is not available: {exc}") from exc
    return getattr(module, func)(path, **options)


__all__ = ["DETECTOR_KINDS", "Detection", "Detector", "DetectorError", "load_detector"]
