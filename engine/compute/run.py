"""Run a spec end to end: its analysis, then the detectors named in ``spec.options["detectors"]``
over the finished items (the generate analysis applies them itself), then each follow-up analysis
that applies (the demo world's prompt test)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memtui.engine import analyses
from memtui.engine.core.cancel import is_cancelled

__all__ = ["run_spec"]


def run_spec(spec: Any, run_dir: Any, progress: Callable[..., None] | None = None,
             cancel: Any = None) -> dict[str, Any]:
    """Run (or resume) ``spec`` in ``run_dir``; returns the summary dict (also in summary.json).
    Follow-ups run only when the main analysis finished and ``cancel`` is not set."""
    analysis = analyses.get(spec.analysis)
    summary = analysis.run(spec, run_dir, progress=progress, cancel=cancel)
    if summary.get("status") != "finished" or is_cancelled(cancel):
        return summary
    detectors = (getattr(spec, "options", None) or {}).get("detectors")
    if detectors and spec.analysis != "generate":
        from memtui.engine.compute.detect import apply_detectors

        summary["detection"] = apply_detectors(run_dir, detectors, spec)
    for follow in analysis.follow_ups(spec):
        summary = follow.run_after(spec, run_dir, summary, cancel=cancel)
    return summary
