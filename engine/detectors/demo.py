"""The demo world's shape classifier behind the :class:`Detector` interface.

A 3-conv CNN on 32x32 RGB images in [-1, 1] with one softmax output per shape. It is trained (by
``memtui.engine.demo.train``) on VAE reconstructions of generator images as well as clean ones, so
it reads the demo model's outputs correctly. Weights: ``classifier.safetensors`` + ``classifier.json``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from memtui.engine.detectors.base import Detector, DetectorError
from memtui.engine.core.tensors import uint8_to_tensor
from memtui.engine.model.shipped import demo_dir

DETECTOR = {"kind": "demo", "summary": "the demo world's shape classifier (ships with memtui)",
            "needs_path": False, "default_concept": None, "order": 10}

WEIGHTS = "classifier.safetensors"
CONFIG = "classifier.json"
# The weights shipped with memtui (engine/demo/weights/), found through model.shipped: the demo
# package itself sits above the detectors in the layers.
SHIPPED = demo_dir()


class ShapeNet(nn.Module):
    """Logits ``[B, n_classes]`` for images ``[B, 3, 32, 32]`` in [-1, 1]: three conv + max-pool
    stages (32 -> 4 px) and a two-layer head on the flattened map (keeps the shape's layout)."""

    def __init__(self, n_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * w * 16, 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def images_to_tensor(images: Sequence[Image.Image], size: int = 32) -> torch.Tensor:
    """RGB PIL images (any size) -> float32 ``[B, 3, size, size]`` in [-1, 1]."""
    arrs = []
    for im in images:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BOX if im.width > size else Image.Resampling.BILINEAR)
        arrs.append(np.asarray(im, dtype=np.uint8))
    return uint8_to_tensor(np.stack(arrs))


class DemoDetector(Detector):
    """Softmax probability of each demo shape; a detection is ``p >= threshold`` (0.5)."""

    name = "demo"

    def __init__(self, model: ShapeNet, concepts: Sequence[str], size: int = 32, threshold: float = 0.5,
                 source: str = "", batch_size: int = 256) -> None:
        self.model = model.eval().requires_grad_(False)
        self.concepts = tuple(concepts)
        self.size = size
        self.threshold = threshold
        self.source = source
        self.batch_size = batch_size

    @torch.no_grad()
    def scores_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B, n_concepts]`` for image tensors ``[B, 3, size, size]`` in [-1, 1]."""
        if self.model is None:
            raise DetectorError("demo detector was closed")
        return torch.cat([self.model(b.float()).softmax(-1) for b in x.split(self.batch_size)]) if len(x) else \
            torch.zeros(0, len(self.concepts))

    def scores(self, images: Sequence[Image.Image]) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, len(self.concepts)), np.float32)
        return self.scores_tensor(images_to_tensor(images, self.size)).numpy().astype(np.float32)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]

    def describe(self) -> dict:
        return {**super().describe(), "source": self.source}


def save(model: ShapeNet, concepts: Sequence[str], folder: str | Path, size: int = 32, **info: Any) -> Path:
    """Write ``classifier.safetensors`` + ``classifier.json`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    width = model.features[0].out_channels
    (folder / CONFIG).write_text(json.dumps({"concepts": list(concepts), "size": size, "width": width,
                                             **info}, indent=2))
    return folder


def load(path: str | Path | None = None, **opts: Any) -> DemoDetector:
    """Load the demo classifier from a folder (or its ``.safetensors`` file); ``None`` = the weights
    shipped with memtui. Options: ``threshold`` (default 0.5)."""
    from safetensors.torch import load_file

    path = Path(SHIPPED if path is None else path)
    folder = path.parent if path.suffix == ".safetensors" else path
    wfile = path if path.suffix == ".safetensors" else folder / WEIGHTS
    if not wfile.exists() or not (folder / CONFIG).exists():
        raise DetectorError(f"demo detector: {wfile} or {folder / CONFIG} is missing")
    cfg = json.loads((folder / CONFIG).read_text())
    model = ShapeNet(len(cfg["concepts"]), cfg.get("width", 16))
    model.load_state_dict(load_file(str(wfile)))
    return DemoDetector(model, cfg["concepts"], cfg.get("size", 32), float(opts.get("threshold", 0.5)),
                        source=str(wfile))
