"""Rendering of a run's summary.json: per-set statistics, the three EMDs and the relative
distance, as Rich tables (display only; the numbers are the file's)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from memtui.engine.runs.view import RunView

EMD_KEYS: tuple[tuple[str, str], ...] = (
    ("erased_normal", "EMD erased ↔ normal"), ("reference_normal", "EMD reference ↔ normal"),
    ("erased_reference", "EMD erased ↔ reference"), ("relative_distance", "relative distance"),
)


def fmt(v: Any, digits: int = 2) -> str:
    """A number for display ('-' for missing/NaN)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "-" if v is None else str(v)
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return f"{v:,.{digits}f}" if isinstance(v, float) else str(v)


def summary_renderable(summary: dict[str, Any] | None) -> RenderableType:
    """Per-set count/mean/std of PSNR and NLL (the sets the run wrote), then EMDs and relative
    distance, read through :class:`RunView`."""
    if not summary:
        return Text("no summary yet (written when the run finishes)", style="dim")
    sets = Table(title="per set (mean ± std)", box=None, header_style="bold", pad_edge=False)
    view = RunView(Path("."), {}, summary)
    seed_only = any(view.set_stat(name, "psnr_seed_only") is not None for name in view.set_names())
    cols = [("set", 6), ("n", 1), ("PSNR dB", 5), ("±", 4)]
    cols += [("seed-only", 5), ("±", 4)] if seed_only else []
    for col, width in cols + [("NLL", 7), ("±", 4)]:
        sets.add_column(col, justify="left" if col == "set" else "right", min_width=width,
                        no_wrap=col != "set")
    for name in view.set_names():
        mean, nmean = view.set_stat(name, "psnr"), view.set_stat(name, "nll")
        if mean is None and nmean is None:
            continue
        count = view.set_stat(name, "psnr", "count") or view.set_stat(name, "nll", "count")
        cells = [name, fmt(int(count)) if count is not None else "-", fmt(mean), fmt(view.set_stat(name, "psnr", "std"))]
        if seed_only:
            cells += [fmt(view.set_stat(name, "psnr_seed_only")), fmt(view.set_stat(name, "psnr_seed_only", "std"))]
        sets.add_row(*cells, fmt(nmean, 1), fmt(view.set_stat(name, "nll", "std"), 1))
    dist = Table(box=None, show_header=False, pad_edge=False)
    dist.add_column("what")
    dist.add_column("value", justify="right")
    for key, label in EMD_KEYS:
        val = summary.get(key)
        if val is not None:
            dist.add_row(label, fmt(val, 3 if key == "relative_distance" else 1))
    normal = summary.get("normal")
    parts: list[RenderableType] = [sets, dist]
    if isinstance(normal, dict):
        desc = ", ".join(f"{k}={fmt(v, 1)}" for k, v in normal.items() if v is not None)
        parts.append(Text(f"normal: {desc}", style="dim"))
    elif isinstance(normal, str):
        parts.append(Text(f"normal: {normal}", style="dim"))
    return Group(*parts)
