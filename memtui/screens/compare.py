"""Compare: finished runs side by side, as a method × concept table of the erased set's mean PSNR
and the relative distance (like the paper's figure 5). Numbers are the runs' summary.json values."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from .. import jobs
from ..widgets.summary import find_key, fmt
from ..widgets.tables import sync_table


def run_labels(info: jobs.RunInfo) -> tuple[str, str]:
    """(method, concept) of a run: the method is the ablated checkpoint's name (or "base") with
    the inversion method; the concept is ``spec.concept`` or the erased set's folder name."""
    spec = info.spec
    ablated = spec.get("erasure") or (Path(str(spec["ablated"])).stem if spec.get("ablated") else "base")
    method = f"{ablated} · {spec.get('method', '?')}"
    erased = spec.get("erased")
    concept = spec.get("concept") or (Path(str(erased)).name if erased else info.name)
    return method, str(concept)


def compare_cells(runs: list[jobs.RunInfo]) -> tuple[list[str], list[str], dict[tuple[str, str], tuple[float | None, float | None]]]:
    """Methods (rows), concepts (columns) and ``(method, concept) -> (mean PSNR, RD)``; a later run
    with the same labels replaces an earlier one."""
    methods: list[str] = []
    concepts: list[str] = []
    cells: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    for info in runs:
        method, concept = run_labels(info)
        s = info.summary or {}
        psnr = jobs.set_stat(s, ("erased", "target", "memory"), "psnr", "mean")
        rd = find_key(s, "relative_distance")
        cells[(method, concept)] = (psnr, rd if isinstance(rd, (int, float)) else None)
        if method not in methods:
            methods.append(method)
        if concept not in concepts:
            concepts.append(concept)
    return methods, concepts, cells


class CompareScreen(Screen):
    """Each cell: mean PSNR of the erased set (dB) · relative distance."""

    HELP = ("Rows are erasure methods (the ablated checkpoint's name and the inversion method), "
            "columns are concepts. Each cell: mean PSNR of the erased set in dB · relative distance "
            "(EMD erased↔normal / EMD reference↔normal; ≈1 means the erased concept's seeds are as "
            "likely as ordinary images' seeds).")
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("r", "reload", "Reload"),
                Binding("e", "export_report", "Export report")]

    def __init__(self, run_dirs: list[Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dirs = [Path(p) for p in run_dirs]

    def compose(self) -> ComposeResult:
        yield Static(f"Compare · {len(self.run_dirs)} runs", classes="title-line")
        yield DataTable(id="compare-table", cursor_type="cell", zebra_stripes=True)
        yield Static("cells: mean PSNR of the erased set (dB) · relative distance", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def action_export_report(self) -> None:
        from ..export import export_report

        export_report(self, self.run_dirs)

    def action_reload(self) -> None:
        runs = [jobs.read_run(p) for p in self.run_dirs]
        methods, concepts, cells = compare_cells(runs)
        rows = []
        for m in methods:
            row = [m]
            for c in concepts:
                psnr, rd = cells.get((m, c), (None, None))
                row.append("" if (m, c) not in cells else f"{fmt(psnr)} dB · {fmt(rd, 2)}")
            rows.append((m, tuple(row)))
        sync_table(self.query_one(DataTable), rows, [("method", "method")] + [(c, c) for c in concepts])
