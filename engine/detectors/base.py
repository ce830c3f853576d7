"""The one interface every concept detector implements (demo classifier, NudeNet, ImageNet
classifier, style classifier, CLIP similarity).

Images go in as a list of RGB ``PIL.Image`` (any size; each detector resizes as its model needs).
Scores are floats, probabilities in [0, 1] for the classifiers; the CLIP adapter returns the raw
cosine similarity in [-1, 1] (its threshold is on that scale). A detection is
``score >= threshold`` unless a detector documents another rule (e.g. the style top-k rule).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


class DetectorError(RuntimeError):
    """A detector cannot be loaded or run (missing file, wrong format, missing optional package)."""


@dataclass
class Detection:
    """Per-image result for one concept: ``scores`` float [B] in [0, 1], ``flags`` bool [B]."""

    concept: str
    scores: np.ndarray
    flags: np.ndarray
    threshold: float
    rule: str = "score >= threshold"
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Fraction of images flagged (0..1); NaN for an empty batch."""
        return float(self.flags.mean()) if len(self.flags) else float("nan")

    def to_dict(self) -> dict:
        return {"concept": self.concept, "threshold": self.threshold, "rule": self.rule,
                "scores": [float(s) for s in self.scores], "flags": [bool(f) for f in self.flags],
                "rate": self.rate, **self.extra}


class Detector(ABC):
    """A concept detector. Subclasses set ``name``, ``concepts`` and ``threshold``."""

    name: str = "detector"
    concepts: tuple[str, ...] = ()
    threshold: float = 0.5

    @abstractmethod
    def scores(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Scores float32 ``[B, len(self.concepts)]`` for RGB images (range as the module docstring says)."""

    def detect(self, images: Sequence[Image.Image], concept: str) -> Detection:
        """Scores and yes/no flags for ``concept`` (one of ``self.concepts``)."""
        if concept not in self.concepts:
            raise DetectorError(f"{self.name} does not know concept {concept!r}; it knows: {', '.join(self.concepts)}")
        if len(images) == 0:
            return Detection(concept, np.zeros(0, np.float32), np.zeros(0, bool), self.threshold)
        s = np.asarray(self.scores(images), dtype=np.float32)[:, self.concepts.index(concept)]
        return Detection(concept, s, s >= self.threshold, self.threshold)

    def close(self) -> None:
        """Release the model's memory (the detector is unusable afterwards)."""

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict:
        """Name, concepts, threshold and source, for run records (JSON-serialisable)."""
        return {"name": self.name, "concepts": list(self.concepts), "threshold": self.threshold}
