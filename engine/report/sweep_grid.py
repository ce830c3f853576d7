"""A sweep in a report: ``SWEEP_DIR`` (a folder with ``sweep.json``) stands for its cells' run
directories, and the report gains the paper's grid figures across the sweep (its figure 5): mean
erased-set PSNR and relative distance per erasure method × concept, as tables and heat maps, one
per base × inversion method, and ``sweep_grid.csv`` with every cell's numbers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memtui.engine.report.collect import RunData, set_stat
from memtui.engine.runs.sweep import SWEEP_JSON, checkpoint_label, read_sweep_json

__all__ = ["SweepInfo", "expand_sweeps", "grid_rows", "grid_heatmap"]


@dataclass
class SweepInfo:
    """One sweep given to the report: its folder, sweep.json, and the cells that have a run."""

    path: Path
    data: dict[str, Any]
    cells: dict[Path, dict[str, Any]] = field(default_factory=dict)  # run dir -> its sweep.json cell
    missing: list[str] = field(default_factory=list)  # cells with no run directory yet

    @property
    def name(self) -> str:
        return str(self.data.get("name") or self.path.name)


def expand_sweeps(paths: Sequence[Path]) -> tuple[list[Path], list[SweepInfo]]:
    """Replace each sweep folder in ``paths`` by its cells' run directories (those that exist, in
    the sweep's order); other paths stay. ValueError naming a damaged sweep.json."""
    out: list[Path] = []
    sweeps: list[SweepInfo] = []
    for p in paths:
        if not (Path(p) / SWEEP_JSON).is_file():
            out.append(Path(p))
            continue
        info = SweepInfo(Path(p), read_sweep_json(p))
        for cell in info.data["cells"]:
            run = Path(p) / str(cell.get("name"))
            if (run / "spec.json").is_file():
                info.cells[run.resolve()] = cell
                out.append(run)
            else:
                info.missing.append(str(cell.get("name")))
        sweeps.append(info)
    return out, sweeps


def grid_rows(sweep: SweepInfo, runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """One row per cell of ``sweep`` that the report read: its axes, status and headline numbers
    (concept: PSNR / seed-only PSNR / NLL per set, EMDs, relative distance; memories: CV and memory
    PSNR / NLL; scramble: NLL increase)."""
    rows = []
    for r in runs:
        cell = sweep.cells.get(Path(r.path).resolve())
        if cell is None:
            continue
        row: dict[str, Any] = {"sweep": sweep.name, "cell": cell.get("name"), "base": cell.get("base"),
                               "checkpoint": cell.get("checkpoint"), "erasure": cell.get("erasure"),
                               "concept": cell.get("concept"), "method": cell.get("method"),
                               "analysis": cell.get("analysis"), "status": r.summary.get("status") or "incomplete",
                               "complete": r.summary.get("complete")}
        if r.analysis == "concept":
            for s in ("erased", "reference"):
                for key in ("psnr", "psnr_seed_only", "nll"):
                    row[f"{s}_{key}_mean"], row[f"{s}_{key}_std"] = set_stat(r, s, key)
            for key in ("erased_normal", "reference_normal", "erased_reference", "relative_distance"):
                row[key] = r.summary.get(key)
        elif r.analysis == "memories":
            avg = r.summary.get("average") or {}
            for key in ("cv", "cv_pairwise"):
                row[f"{key}_mean"] = (avg.get(key) or {}).get("mean")
            for s in ("memory", "control"):
                for key in ("psnr", "nll"):
                    row[f"{s}_{key}_mean"], row[f"{s}_{key}_std"] = set_stat(r, s, key)
        elif r.analysis == "scramble":
            inc = r.summary.get("nll_increase") or {}
            row["nll_increase_mean"], row["nll_increase_std"] = inc.get("mean"), inc.get("std")
            row["fraction_less_likely"] = r.summary.get("fraction_less_likely")
        rows.append(row)
    return rows


def row_label(row: dict[str, Any]) -> str:
    """The grid's row: :func:`~memtui.engine.runs.sweep.checkpoint_label`."""
    return checkpoint_label(row.get("erasure"), row.get("checkpoint"))


def groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Concept-analysis rows grouped by (base, inversion method)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("analysis") == "concept":
            out.setdefault((str(row.get("base")), str(row.get("method"))), []).append(row)
    return out


def matrix(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[str], list[str], np.ndarray]:
    """(row labels, concepts, values) of ``key`` over erasure × concept; NaN where no cell."""
    labels = list(dict.fromkeys(row_label(r) for r in rows))
    concepts = list(dict.fromkeys(str(r.get("concept")) for r in rows))
    m = np.full((len(labels), len(concepts)), np.nan)
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and np.isfinite(v):
            m[labels.index(row_label(r)), concepts.index(str(r.get("concept")))] = float(v)
    return labels, concepts, m


def grid_heatmap(rows: Sequence[dict[str, Any]], title: str, path: Path) -> Path | None:
    """Two heat maps side by side (erasure × concept): mean erased-set PSNR (dB) and relative
    distance (a diverging scale centred on 1: erased seeds as typical as reference seeds)."""
    from memtui.engine.report.figures import plt, save

    from matplotlib import patheffects

    labels, concepts, psnr = matrix(rows, "erased_psnr_mean")
    _, _, rd = matrix(rows, "relative_distance")
    if np.isnan(psnr).all() and np.isnan(rd).all():
        return None
    p = plt()
    w = max(3.0, 0.8 * len(concepts) + 2.2)
    fig, axes = p.subplots(1, 2, figsize=(2 * w, max(2.4, 0.45 * len(labels) + 1.4)))
    for ax, m, name, cmap in ((axes[0], psnr, "erased-set PSNR (dB)", "viridis"),
                              (axes[1], rd, "relative distance", "RdBu_r")):
        kw: dict[str, Any] = {"cmap": cmap, "aspect": "auto"}
        if name == "relative distance" and not np.isnan(m).all():
            span = max(float(np.nanmax(np.abs(m - 1.0))), 0.05)
            kw.update(vmin=1.0 - span, vmax=1.0 + span)
        im = ax.imshow(np.ma.masked_invalid(m), **kw)
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_xticks(range(len(concepts)), concepts, fontsize=8, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(name, fontsize=9)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7, color="k",
                            path_effects=[patheffects.withStroke(linewidth=2, foreground="w")])
    fig.suptitle(title, fontsize=10)
    return save(fig, path)
