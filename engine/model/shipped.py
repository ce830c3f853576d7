"""Where the weights shipped with memtui live: the demo world's base pipeline, its erased twin and
its classifier (package data under ``engine/demo/weights/``). Paths only, so any layer can find the
demo model without importing the demo package (which trains and runs it)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_CONCEPT", "demo_dir", "base_dir", "erased_path"]

DEMO_CONCEPT = "circle"  # the concept the shipped twin forgot


def demo_dir() -> Path:
    """Folder of the shipped demo weights."""
    return Path(__file__).resolve().parents[1] / "demo" / "weights"


def base_dir() -> Path:
    """The demo world's base model: a diffusers pipeline folder."""
    return demo_dir() / "base"


def erased_path(concept: str = DEMO_CONCEPT) -> Path:
    """The erased twin: partial UNet safetensors of the ESD-changed tensors."""
    return demo_dir() / f"erased_{concept}.safetensors"
