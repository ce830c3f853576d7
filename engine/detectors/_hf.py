"""Shared loading of local transformers folders for the image-classification and CLIP detectors:
offline (``local_files_only``), a clear :class:`DetectorError` for a missing or malformed folder."""
from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from memtui.engine.detectors.base import DetectorError
from memtui.engine.core.device import empty_cache


def check_folder(kind: str, path: str | Path | None) -> Path:
    """The folder ``path`` as a Path; DetectorError unless it holds a ``config.json``."""
    if path is None:
        raise DetectorError(f"the {kind} detector needs a local model folder (config.json + weights)")
    p = Path(path)
    if not (p / "config.json").is_file():
        raise DetectorError(f"{kind} detector: {p} is not a transformers model folder (no config.json)")
    return p


def load_pretrained(kind: str, loader: Any, path: Path, **kw: Any) -> Any:
    """``loader.from_pretrained(path, local_files_only=True, **kw)`` with errors as DetectorError."""
    try:
        return loader.from_pretrained(str(path), local_files_only=True, **kw)
    except (OSError, ValueError, KeyError) as exc:
        raise DetectorError(f"{kind} detector: cannot load {path}: {exc}") from exc


def pick_device(device: str | torch.device | None) -> torch.device:
    """``device`` or CUDA if available else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def release(*_: Any) -> None:
    """Collect garbage and return cached accelerator memory."""
    gc.collect()
    empty_cache()


@torch.no_grad()
def softmax_batches(model: Any, processor: Any, images: Sequence[Image.Image], batch_size: int,
                    device: torch.device) -> np.ndarray:
    """Class probabilities of a transformers image classifier, float32 ``[B, num_labels]``, computed
    ``batch_size`` images at a time (images converted to RGB and preprocessed by ``processor``)."""
    out = []
    for i in range(0, len(images), batch_size):
        chunk = [im.convert("RGB") for im in images[i:i + batch_size]]
        x = processor(images=chunk, return_tensors="pt")["pixel_values"].to(device, model.dtype)
        out.append(torch.softmax(model(pixel_values=x).logits.float(), dim=-1).cpu())
    if not out:
        return np.zeros((0, int(model.config.num_labels)), dtype=np.float32)
    return torch.cat(out).numpy()
