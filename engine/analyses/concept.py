"""``concept`` — the paper's concept-level analysis (§1): invert every image of an erased set and of
a reference set under the (ablated) model, regenerate, measure PSNR and each seed's NLL, and compare
the NLL distributions: relative distance = EMD(erased, N) / EMD(reference, N)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from memtui.engine.analyses.registry import register
from memtui.engine.analyses.base import (RECORD_BASE, SUMMARY_BASE, Analysis, CommonOptions, Table,
                                          detection_lines, error_lines, mean_std, num, seed_lines)


@register
class Concept(Analysis):
    name = "concept"
    question = ("Invert an erased set and a reference set; PSNR, seed NLL and the relative distance "
                "EMD(erased, N) / EMD(reference, N)")
    Options = CommonOptions
    compute = "memtui.engine.compute.concept:run_concept"
    datasets = ("erased", "reference")
    sets = ("erased", "reference")
    headline_sets = ("erased",)
    record_keys = RECORD_BASE + ("psnr", "psnr_seed_only", "psnr_vae", "nll", "nll_parts", "seed_dim", "seconds",
                                 "z_shape", "latents", "query", "recon", "seed_only")
    summary_keys = SUMMARY_BASE + (
        "method", "steps", "method_seed", "sets", "erased_normal", "reference_normal", "erased_reference",
        "relative_distance", "relative_distance_er", "emd_metric", "normal", "d", "reasons", "load_report",
        "timing", "versions", "device", "precision", "batch_size", "image_size", "seed", "inversion")

    @classmethod
    def headline(cls, summary: Mapping[str, Any]) -> str:
        parts = [super().headline(summary)] if super().headline(summary) != "-" else []
        rd = summary.get("relative_distance")
        if isinstance(rd, (int, float)) and not (isinstance(rd, float) and math.isnan(rd)):
            parts.append(f"RD {rd:.2f}")
        return "  ".join(parts) or "-"

    @classmethod
    def table(cls, summary: Mapping[str, Any], run_dir: Any) -> Table:
        t = Table(title=f"{summary.get('analysis', cls.name)} · {summary.get('method', '')} · {run_dir}",
                  columns=["set", "items", "ok", "errors", "PSNR dB", "seed-only dB", "PSNR VAE dB", "NLL nats"])
        for name, s in (summary.get("sets") or {}).items():
            t.rows.append([name, str(s.get("n_items", "")), str(s.get("n_ok", "")), str(s.get("n_errors", "")),
                           _fmt(s.get("psnr")), _fmt(s.get("psnr_seed_only")), _fmt(s.get("psnr_vae")),
                           _fmt(s.get("nll"), 1)])
        unit = "nats²" if summary.get("emd_metric", "w2") == "w2" else "nats"
        normal = summary.get("normal") or {}
        t.notes += [f"EMD erased–normal     {num(summary.get('erased_normal'), '.4g')} {unit}",
                    f"EMD reference–normal  {num(summary.get('reference_normal'), '.4g')} {unit}",
                    f"EMD erased–reference  {num(summary.get('erased_reference'), '.4g')} {unit}"
                    f"   (normal: {normal.get('mode', '?')})",
                    f"relative distance     {num(summary.get('relative_distance'), '.4g')}"]
        t.notes += [f"  note: {r}" for r in summary.get("reasons") or []]
        t.notes += seed_lines(summary)
        t.notes += error_lines(summary, run_dir) + detection_lines(summary)
        return t


def _fmt(stats: Any, digits: int = 2) -> str:
    """``mean ± std`` with ``digits`` decimals; '-' when unknown (the concept table's style)."""
    if not isinstance(stats, Mapping) or not isinstance(stats.get("mean"), (int, float)):
        return "-"
    std = stats.get("std")
    return f"{stats['mean']:.{digits}f}" + (f" ± {std:.{digits}f}" if isinstance(std, (int, float)) else "")


__all__ = ["Concept", "mean_std"]
