"""CLIP image-text similarity from a local CLIP folder (``CLIPModel`` + its image processor and
tokenizer) as a :class:`Detector`.

Score = cosine similarity of the projected image and text embeddings (in [-1, 1]; for real CLIP
models matching pairs sit around 0.25–0.35 and unrelated ones around 0.1–0.2). Detection:
``score >= threshold`` with default threshold 0.25, a heuristic to set per concept (``threshold=``)
— CLIP similarity is a soft signal, not a classifier. Concepts are named texts (``texts={name:
text}``); any other concept string is used as the text itself.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from memtui.engine.detectors._hf import check_folder, load_pretrained, pick_device, release
from memtui.engine.detectors.base import Detection, Detector, DetectorError

DETECTOR = {"kind": "clip", "summary": "CLIP image-text similarity from a local CLIP folder",
            "needs_path": True, "default_concept": None, "order": 50}

DEFAULT_THRESHOLD = 0.25


class ClipDetector(Detector):
    """Cosine similarity between images and concept texts."""

    name = "clip"

    def __init__(self, path: Path, texts: dict[str, str] | None = None, threshold: float = DEFAULT_THRESHOLD,
                 device: str | torch.device | None = None, batch_size: int = 16) -> None:
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        self.path = path
        self.device = pick_device(device)
        self.model = load_pretrained(self.name, CLIPModel, path).to(self.device).eval()
        self.image_processor = load_pretrained(self.name, AutoImageProcessor, path)
        self.tokenizer = load_pretrained(self.name, AutoTokenizer, path)
        self.texts = dict(texts or {})
        self.concepts = tuple(self.texts)
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)

    def _check(self) -> Any:
        if self.model is None:
            raise DetectorError("clip detector is closed")
        return self.model

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised projected text embeddings ``[T, D]`` (float32, CPU)."""
        model = self._check()
        tok = self.tokenizer(list(texts), padding=True, truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")
        out = model.text_model(input_ids=tok["input_ids"].to(self.device),
                               attention_mask=tok.get("attention_mask").to(self.device)
                               if tok.get("attention_mask") is not None else None)
        e = model.text_projection(out.pooler_output).float()
        return torch.nn.functional.normalize(e, dim=-1).cpu()

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised projected image embeddings ``[B, D]`` (float32, CPU)."""
        model = self._check()
        out = []
        for i in range(0, len(images), self.batch_size):
            chunk = [im.convert("RGB") for im in images[i:i + self.batch_size]]
            x = self.image_processor(images=chunk, return_tensors="pt")["pixel_values"]
            v = model.vision_model(pixel_values=x.to(self.device, model.dtype))
            out.append(torch.nn.functional.normalize(model.visual_projection(v.pooler_output).float(), dim=-1).cpu())
        return torch.cat(out)

    def similarity(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """Cosine similarities float32 ``[B, T]``."""
        return (self.image_embeddings(images) @ self.text_embeddings(texts).T).numpy().astype(np.float32)

    def scores(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not self.concepts:
            raise DetectorError("clip detector has no named texts; pass texts={name: text} or call detect(images, text)")
        return self.similarity(images, [self.texts[c] for c in self.concepts])

    def detect(self, images: Sequence[Image.Image], concept: str) -> Detection:
        text = self.texts.get(concept, concept)
        rule = "cosine similarity >= threshold"
        if len(images) == 0:
            return Detection(concept, np.zeros(0, np.float32), np.zeros(0, bool), self.threshold, rule)
        s = self.similarity(images, [text])[:, 0]
        return Detection(concept, s, s >= self.threshold, self.threshold, rule, extra={"text": text})

    def close(self) -> None:
        self.model = None
        self.image_processor = None
        self.tokenizer = None
        release()

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.path), "texts": self.texts, "threshold": self.threshold,
                "score": "cosine similarity"}


def load(path: str | Path | None, **options: Any) -> ClipDetector:
    """Open a local CLIP folder (e.g. ``openai/clip-vit-large-patch14`` saved with save_pretrained)."""
    return ClipDetector(check_folder("clip", path), **options)
