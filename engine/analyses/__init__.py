"""Analyses a run can perform, dispatched by ``spec.analysis``. Each entry names
``module:function`` with the signature ``fn(spec, run_dir, progress=None, cancel=None) -> dict``
(the summary); modules are imported lazily.

- ``concept``  — the paper's concept-level analysis (§1): invert erased and reference sets
- ``memories`` — the Sequential Inversion Block (§2): many memories of one image
- ``scramble`` — the patch-shuffle test of the paper's limitations section
- ``generate`` — an erased set from a prompt CSV (official layout)
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

ANALYSES: dict[str, str] = {
    "concept": "memtui.engine.compute.concept:run_concept",
    "memories": "memtui.engine.compute.memories:run_memories",
    "scramble": "memtui.engine.compute.scramble:run_scramble",
    "generate": "memtui.engine.compute.generate:run_generate",
}


def get_analysis(name: str) -> Callable[..., dict[str, Any]]:
    """The run function of analysis ``name``; ValueError naming the known analyses otherwise."""
    if name not in ANALYSES:
        raise ValueError(f"unknown analysis {name!r}; known: {', '.join(ANALYSES)}")
    module_name, func = ANALYSES[name].split(":")
    return getattr(importlib.import_module(module_name), func)


def run(spec: Any, run_dir: Any, progress: Callable[..., None] | None = None, cancel: Any = None) -> dict[str, Any]:
    """Run (or resume) ``spec`` in ``run_dir``; returns the summary dict. Detectors named in
    ``spec.options["detectors"]`` then score the finished items (``detectors.apply``; the
    generate analysis applies them itself)."""
    summary = get_analysis(spec.analysis)(spec, run_dir, progress=progress, cancel=cancel)
    detectors = (getattr(spec, "options", None) or {}).get("detectors")
    if detectors and spec.analysis != "generate" and summary.get("status") == "finished":
        from memtui.engine.compute.detect import apply_detectors

        summary["detection"] = apply_detectors(run_dir, detectors, spec)
    return summary
