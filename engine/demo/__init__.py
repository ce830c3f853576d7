"""The demo world shipped with memtui: a tiny text-to-image LDM (diffusers format, real SD classes)
trained on procedurally drawn coloured shapes, its ESD-erased twin, and a shape classifier.

Shipped files (``demo_dir()``): ``base/`` (diffusers pipeline folder), ``erased_<concept>.safetensors``
(the UNet tensors ESD changed: a partial state dict), ``classifier.safetensors`` + ``classifier.json``,
``demo.json`` (training record). Rebuild with ``python -m memtui.engine.demo.train``.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from memtui.engine.model.shipped import DEMO_CONCEPT, base_dir, demo_dir, erased_path

if TYPE_CHECKING:
    from memtui.engine.model.pipeline import SDPipeline

SHAPES = ("circle", "square", "triangle", "star")

__all__ = ["DEMO_CONCEPT", "SHAPES", "demo_dir", "base_dir", "erased_path", "load_demo", "write_demo_datasets"]


def load_demo(which: str = "base", device: str = "cpu", precision: str = "fp32") -> "SDPipeline":
    """The demo base model (``"base"``) or its twin with ``DEMO_CONCEPT`` erased (``"erased"``),
    loaded through the same loader as Stable Diffusion 1.4."""
    from memtui.engine.model.loading import load_ablated, load_base

    if which not in ("base", "erased"):
        raise ValueError(f"which must be 'base' or 'erased', got {which!r}")
    pipe = load_base(str(base_dir()), device=device, precision=precision)
    if which == "erased":
        load_ablated(pipe, erased_path())
    return pipe


def write_demo_datasets(out_dir: str | Path, n_per_set: int = 32, seed: int = 0,
                        concept: str = DEMO_CONCEPT) -> tuple[Path, Path]:
    """Draw the demo datasets under ``out_dir``: the erased set (``n_per_set`` images of ``concept``
    in the official layout ``imgs/<case>_0.png`` + ``prompts.csv``) and the reference set (the other
    shapes in turn, a plain folder with ``captions.csv``). Deterministic for ``seed``; 32x32 PNGs.
    Returns ``(erased_dir, reference_dir)``."""
    from PIL import Image

    from memtui.engine.demo.world import SHAPES as ALL, generate

    out = Path(out_dir)
    erased, reference = out / "erased", out / "reference"
    (erased / "imgs").mkdir(parents=True, exist_ok=True)
    reference.mkdir(parents=True, exist_ok=True)
    imgs, _, caps = generate(n_per_set, seed, concept, plain_frac=0.0)
    with open(erased / "prompts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_number", "prompt", "evaluation_seed", "concept"])
        for i, (im, cap) in enumerate(zip(imgs, caps)):
            Image.fromarray(im).save(erased / "imgs" / f"{i}_0.png")
            w.writerow([i, cap, seed + i, concept])
    others = tuple(s for s in ALL if s != concept)
    imgs, _, caps = generate(n_per_set, seed + 1, others, plain_frac=0.0)
    with open(reference / "captions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "caption"])
        for i, (im, cap) in enumerate(zip(imgs, caps)):
            name = f"{i:04d}_{cap.split()[-1]}.png"
            Image.fromarray(im).save(reference / name)
            w.writerow([name, cap])
    return erased, reference
