"""Concept detectors behind one interface (:class:`Detector`), loaded by kind from local files only.

Kinds and the module that implements each (imported lazily, so optional packages such as
onnxruntime are only needed for the detector that uses them):

- ``demo``     — the demo world's shape classifier (ships with memtui)
- ``nudenet``  — NudeNet ONNX detector (needs onnxruntime)
- ``imagenet`` — an ImageNet image-classification folder (e.g. microsoft/resnet-50) for objects
- ``style``    — an image-classification folder for art styles (top-k rule)
- ``clip``     — CLIP image-text similarity from a local CLIP folder
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from memtui.engine.detectors.base import Detection, Detector, DetectorError

DETECTOR_KINDS: dict[str, str] = {
    "demo": ".demo:load",
    "nudenet": ".nudenet:load",
    "imagenet": ".imagenet:load",
    "style": ".style:load",
    "clip": ".clip:load",
}


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
