"""An image-classification folder for art styles (the official van Gogh classifier, 129 artist
classes) as a :class:`Detector`: an image is in the style if the style's label is among the top-k
classes (default k = 10, the official ``vincent-van-gogh`` rule); score = softmax probability of the
label, and the label's 1-based rank is reported too.
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

DETECTOR = {"kind": "style", "summary": "an image-classification folder for art styles (top-k rule)",
            "needs_path": True, "default_concept": "vincent-van-gogh", "order": 40}

DEFAULT_STYLE = "vincent-van-gogh"
DEFAULT_TOP_K = 10


class StyleDetector(Detector):
    """Style labels of the model's ``id2label``; rule ``rank <= top_k``."""

    name = "style"

    def __init__(self, path: Path, top_k: int = DEFAULT_TOP_K, device: str | torch.device | None = None,
                 batch_size: int = 16) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self.path = path
        self.device = pick_device(device)
        self.processor = load_pretrained(self.name, AutoImageProcessor, path)
        self.model = load_pretrained(self.name, AutoModelForImageClassification, path).to(self.device).eval()
        id2label = self.model.config.id2label
        self.concepts = tuple(str(id2label[i]) for i in range(int(self.model.config.num_labels)))
        self.top_k = int(top_k)
        self.threshold = float(self.top_k)
        self.batch_size = int(batch_size)

    def scores(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Softmax over the style labels, float32 ``[B, len(concepts)]``."""
        if self.model is None:
            raise DetectorError("style detector is closed")
        return softmax_batches(self.model, self.processor, images, self.batch_size, self.device)

    def detect(self, images: Sequence[Image.Image], concept: str = DEFAULT_STYLE) -> Detection:
        if concept not in self.concepts:
            raise DetectorError(f"style detector has no label {concept!r}; labels: {', '.join(self.concepts[:20])}"
                                + (" ..." if len(self.concepts) > 20 else ""))
        rule = f"label among the top-{self.top_k}"
        if len(images) == 0:
            return Detection(concept, np.zeros(0, np.float32), np.zeros(0, bool), self.threshold, rule)
        p = self.scores(images)
        j = self.concepts.index(concept)
        # rank = 1 + number of classes with a strictly higher probability
        rank = 1 + (p > p[:, j:j + 1]).sum(axis=1)
        return Detection(concept, p[:, j].astype(np.float32), rank <= self.top_k, self.threshold, rule,
                         extra={"rank": [int(r) for r in rank], "top_k": self.top_k})

    def close(self) -> None:
        self.model = None
        self.processor = None
        release()

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.path), "labels": len(self.concepts), "top_k": self.top_k,
                "rule": f"label among the top-{self.top_k}"}


def load(path: str | Path | None, **options: Any) -> StyleDetector:
    """Open a local style image-classification folder (e.g. the official ``checkpoint-2800``)."""
    return StyleDetector(check_folder("style", path), **options)
