"""An ImageNet image-classification folder (e.g. ``microsoft/resnet-50`` saved locally) as the object
detector of spec §3.1: an image shows the object if the classifier's argmax is the object's ImageNet
class id; the score is the softmax probability at that id.

Any transformers ``AutoModelForImageClassification`` folder with an image-processor config works;
the ``classes`` option adds or overrides concept -> class id entries.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from memtui.engine.detectors._hf import check_folder, load_pretrained, pick_device, release, softmax_batches
from memtui.engine.detectors.base import Detection, Detector, DetectorError

DETECTOR = {"kind": "imagenet", "summary": "an ImageNet image-classification folder (e.g. microsoft/resnet-50)",
            "needs_path": True, "default_concept": None, "order": 30}

IMAGENET_CLASSES: dict[str, int] = {
    "tench": 0, "english springer": 217, "cassette player": 482, "chain saw": 491, "church": 497,
    "french horn": 566, "garbage truck": 569, "gas pump": 571, "golf ball": 574, "parachute": 701,
}


def normalize_concept(name: str) -> str:
    """'Garbage_Truck' / 'garbage-truck' -> 'garbage truck'."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


class ImageNetDetector(Detector):
    """Object concepts by ImageNet class id; rule ``argmax == class id``."""

    name = "imagenet"
    threshold = 0.5  # not used by the argmax rule; kept for the interface

    def __init__(self, path: Path, classes: dict[str, int] | None = None,
                 device: str | torch.device | None = None, batch_size: int = 16) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self.path = path
        self.device = pick_device(device)
        self.processor = load_pretrained(self.name, AutoImageProcessor, path)
        self.model = load_pretrained(self.name, AutoModelForImageClassification, path).to(self.device).eval()
        table = dict(IMAGENET_CLASSES)
        table.update({normalize_concept(k): int(v) for k, v in (classes or {}).items()})
        n = int(self.model.config.num_labels)
        self.classes = {k: v for k, v in table.items() if 0 <= v < n}
        if not self.classes:
            raise DetectorError(f"imagenet detector: {path} has {n} labels; none of the concept ids fit")
        self.concepts = tuple(self.classes)
        self.batch_size = int(batch_size)

    def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Softmax over all classes, float32 ``[B, num_labels]``."""
        if self.model is None:
            raise DetectorError("imagenet detector is closed")
        return softmax_batches(self.model, self.processor, images, self.batch_size, self.device)

    def scores(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Softmax probability at each concept's class id, ``[B, len(concepts)]``."""
        p = self.probabilities(images)
        return p[:, [self.classes[c] for c in self.concepts]]

    def detect(self, images: Sequence[Image.Image], concept: str) -> Detection:
        key = normalize_concept(concept)
        if key not in self.classes:
            raise DetectorError(f"imagenet detector does not know concept {concept!r}; "
                                f"it knows: {', '.join(self.concepts)} (add classes={{name: id}})")
        cid = self.classes[key]
        if len(images) == 0:
            return Detection(key, np.zeros(0, np.float32), np.zeros(0, bool), self.threshold, "argmax == class id")
        p = self.probabilities(images)
        top = p.argmax(axis=1)
        return Detection(key, p[:, cid].astype(np.float32), top == cid, self.threshold,
                         rule="argmax == class id", extra={"class_id": cid, "top1": [int(t) for t in top]})

    def close(self) -> None:
        self.model = None
        self.processor = None
        release()

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "classes": self.classes, "rule": "argmax == class id"}


def load(path: str | Path | None, **options: Any) -> ImageNetDetector:
    """Open a local image-classification folder with ImageNet-1k labels."""
    return ImageNetDetector(check_folder("imagenet", path), **options)
