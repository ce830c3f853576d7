"""``memtui --batch --demo``: the concept analysis on the demo world's erased twin plus the prompt
test. The datasets are drawn into ``RUN_DIR/data`` (erased set: images of ``DEMO_CONCEPT`` in the
official layout; reference set: the other shapes with ``captions.csv``); the run's spec points at the
shipped base model and the twin's partial UNet file; ``summary.json`` gains ``prompt_test``.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memtui.engine.demo import DEMO_CONCEPT, base_dir, demo_dir, erased_path, write_demo_datasets

DATA_SUBDIR = "data"
N_PER_SET = 32
DATA_SEED = 0
PROMPT_N = 64
PROMPT_STEPS = 20  # DDIM steps of the prompt test (at most the spec's steps)
GUIDANCE = 4.0

__all__ = ["demo_spec_fields", "ensure_demo_data", "add_prompt_test"]


def ensure_demo_data(run_dir: str | Path, n_per_set: int = N_PER_SET, seed: int = DATA_SEED) -> tuple[Path, Path]:
    """Draw the demo datasets under ``run_dir/data`` unless they are there already."""
    data = Path(run_dir) / DATA_SUBDIR
    if (data / "erased" / "prompts.csv").is_file() and (data / "reference" / "captions.csv").is_file():
        return data / "erased", data / "reference"
    return write_demo_datasets(data, n_per_set, seed)


def demo_spec_fields(run_dir: str | Path) -> dict[str, Any]:
    """Spec fields of a demo run (datasets drawn first): base, ablated, erased, reference, demo, and
    ``options.concept`` (the erased concept, which names the run in reports)."""
    erased, reference = ensure_demo_data(run_dir)
    return {"base": str(base_dir()), "ablated": str(erased_path()), "erased": str(erased.resolve()),
            "reference": str(reference.resolve()), "demo": True, "options": {"concept": DEMO_CONCEPT}}


def add_prompt_test(spec: Any, run_dir: Any, n: int = PROMPT_N, steps: int | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    cancel: threading.Event | None = None) -> dict[str, Any]:
    """Run the prompt test for ``spec`` (base + ablated) with the demo detector, save samples under
    ``run_dir/prompt_test/`` and add ``prompt_test`` to ``summary.json``; returns the new summary.
    Skipped (summary returned as is) when the summary already holds a prompt test with the same n."""
    import torch

    from memtui.engine.core.device import resolve_device
    from memtui.engine.compute.prompt_test import prompt_test
    from memtui.engine.detectors.demo import load as load_detector
    from memtui.engine.model.loading import load_ablated, load_base
    from memtui.engine.runs.store import RunDir

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    summary = rd.read_summary() or {}
    steps = steps or min(spec.steps, PROMPT_STEPS)
    old = summary.get("prompt_test")
    if isinstance(old, dict) and old.get("n") == n and old.get("steps") == steps:
        return summary
    device = resolve_device(spec.device)
    base = load_base(spec.base, device=device, precision=spec.precision)
    erased = load_base(spec.base, device=device, precision=spec.precision)
    if spec.ablated:
        load_ablated(erased, spec.ablated, lora_scale=float(spec.lora_scale), lora_fuse=bool(spec.lora_fuse))
    with torch.no_grad(), load_detector(demo_dir()) as det:
        pt = prompt_test(base, erased, det.concepts, det, n=n, steps=steps, guidance=GUIDANCE, seed=spec.seed,
                         out_dir=rd.path / "prompt_test", erased_concept=DEMO_CONCEPT,
                         progress=progress, cancel=cancel)
    summary = rd.read_summary() or {}
    summary["prompt_test"] = pt
    rd.write_summary(summary)
    return summary
