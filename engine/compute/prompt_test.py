"""The prompt test: does a model still draw a concept when asked? For the base and the erased model
and each concept prompt "a <concept>", sample ``n`` images (DDIM, classifier-free guidance, seeded
noise; both models get the same seeds) and report the fraction the detector flags as that concept.

Samples are saved as PNGs under ``out_dir/<model>/<concept>/<i:03d>.png`` (what is saved is what is
scored).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from memtui.engine.core.tensors import to_uint8
from memtui.engine.detectors.base import Detector
from memtui.engine.diffusion.ddim import generate_images
from memtui.engine.model.pipeline import SDPipeline

__all__ = ["prompt_test", "concept_prompt"]


def concept_prompt(concept: str) -> str:
    """The prompt used for ``concept``: ``"a <concept>"``."""
    return f"a {concept}"


def prompt_test(base_pipe: SDPipeline, erased_pipe: SDPipeline, concepts: Sequence[str], detector: Detector,
                n: int = 64, steps: int = 50, guidance: float = 4.0, seed: int = 0,
                out_dir: str | Path | None = None, erased_concept: str | None = None,
                progress: Callable[[int, int], None] | None = None,
                cancel: threading.Event | None = None) -> dict[str, Any]:
    """Detection rates (0..1) per model and concept prompt. Returns ``{"models": {"base"|"erased":
    {concept: {"rate", "n", "detected_as": {c: rate}}}}, "retained": {concept: erased/base rate},
    "erased_concept", "n", "steps", "guidance", "seed", "detector", "samples" (the PNG folder or None),
    "seconds"}``."""
    t0 = time.time()
    concepts = list(concepts)
    models = {"base": base_pipe, "erased": erased_pipe}
    res: dict[str, dict[str, Any]] = {m: {} for m in models}
    total, done = len(models) * len(concepts), 0
    for ci, c in enumerate(concepts):
        for m, pipe in models.items():
            if cancel is not None and cancel.is_set():
                raise InterruptedError("prompt test cancelled")
            x = generate_images(pipe, concept_prompt(c), n, seed + 1000 * ci, steps, guidance)
            imgs = [Image.fromarray(a) for a in to_uint8(x)]
            if out_dir is not None:
                d = Path(out_dir) / m / c
                d.mkdir(parents=True, exist_ok=True)
                for i, im in enumerate(imgs):
                    im.save(d / f"{i:03d}.png")
            scores = detector.scores(imgs)
            flags = scores >= detector.threshold
            known = list(detector.concepts)
            res[m][c] = {"rate": float(flags[:, known.index(c)].mean()) if c in known else float("nan"),
                         "n": n, "detected_as": {k: float(flags[:, j].mean()) for j, k in enumerate(known)}}
            done += 1
            if progress is not None:
                progress(done, total)
    retained = {c: (res["erased"][c]["rate"] / res["base"][c]["rate"]) if res["base"][c]["rate"] > 0 else None
                for c in concepts}
    return {"models": res, "retained": retained, "erased_concept": erased_concept, "n": n, "steps": steps,
            "guidance": guidance, "seed": seed, "detector": detector.describe(),
            "samples": str(out_dir) if out_dir is not None else None, "seconds": round(time.time() - t0, 1)}
