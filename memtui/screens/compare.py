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
from ..widgets.summary import fmt
from ..widgets.tables import sync_table
from .openers import Opener


def run_labels(info: jobs.RunInfo) -> tuple[str, str]:
    """(method, concept) of a run, as the report names them (``RunView.method_label``/``concept``)."""
    return info.view.method_label, info.view.concept


Cell = tuple[float | None, float | None, float | None]


def compare_cells(runs: list[jobs.RunInfo]) -> tuple[list[str], list[str], dict[tuple[str, str], Cell]]:
    """Methods (rows), concepts (columns) and ``(method, concept) -> (mean PSNR, mean seed-only
    PSNR, RD)``; a later run with the same labels replaces an earlier one."""
    methods: list[str] = []
    concepts: list[str] = []
    cells: dict[tuple[str, str], Cell] = {}
    for info in runs:
        method, concept = run_labels(info)
        view = info.view
        cells[(method, concept)] = (view.main_psnr(), view.main_psnr("psnr_seed_only"), view.number("relative_distance"))
        if method not in methods:
            methods.append(method)
        if concept not in concepts:
            concepts.append(concept)
    return methods, concepts, cells


OPENER = Opener(key="c", description="Compare", hosts=("browse",), order=30)


class CompareScreen(Screen):
    """Each cell: mean PSNR of the erased set (dB) · relative distance."""

    @classmethod
    def open_from(cls, host: Any) -> "CompareScreen | None":
        """The marked runs, else every finished concept run."""
        runs = host.marked_runs() or [r for r in host.all_runs() if r.summary and r.analysis == "concept"]
        if not runs:
            host.notify("no finished concept runs to compare (mark runs with space)", severity="warning")
            return None
        return cls([r.path for r in runs])

    HELP = ("Rows are erasure methods (the ablated checkpoint's name and the inversion method), "
            "columns are concepts. Each cell: mean PSNR of the erased set in dB (in brackets the seed-only "
            "PSNR, plain DDIM from the seed alone, when the method's own reconstruction uses more) · relative distance "
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
                psnr, seed_only, rd = cells.get((m, c), (None, None, None))
                alone = "" if seed_only is None or psnr is None or abs(seed_only - psnr) < 0.005 else f" ({fmt(seed_only)})"
                row.append("" if (m, c) not in cells else f"{fmt(psnr)}{alone} dB · {fmt(rd, 2)}")
            rows.append((m, tuple(row)))
        sync_table(self.query_one(DataTable), rows, [("method", "method")] + [(c, c) for c in concepts])
