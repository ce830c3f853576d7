"""Compare: finished runs side by side, as a method × concept table of the erased set's mean PSNR
and the relative distance (like the paper's figure 5), beside their per-item NLL distributions
overlaid on one plot with the N(0, I) law, and their PSNR distributions. Table numbers are the
runs' summary.json values; the plots read each run's results.jsonl (ok items)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from .. import jobs
from ..widgets.histogram import Histogram
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


def run_series(runs: list[jobs.RunInfo], metric: str) -> dict[str, list[float]]:
    """``"method · concept: set" -> values`` of ``metric`` over each run's ok items, per set."""
    out: dict[str, list[float]] = {}
    for info in runs:
        method, concept = run_labels(info)
        for rec in jobs.read_records(info.path).values():
            v = rec.get(metric)
            if rec.get("status") == "ok" and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(f"{method} · {concept}: {rec.get('set', '?')}", []).append(float(v))
    return out


def shared_law(runs: list[jobs.RunInfo]) -> tuple[tuple[float, float, str] | None, str]:
    """The N(0, I) NLL law of the runs' seeds (mean, std, label) and a note: the law is drawn when
    every run with a known seed dimension has the same one, else the first one's, said in the note."""
    dims = {info.name: info.view.seed_dim() for info in runs}
    known = {d for d in dims.values() if d}
    if not known:
        return None, "no seed dimension known: no law drawn"
    first = next(d for d in dims.values() if d)
    law = next(info.view.nll_law() for info in runs if info.view.seed_dim() == first)
    if law is None:
        return None, ""
    label = f"N(0,I) law, d={first}"
    note = "" if len(known) == 1 else f"seed dimensions differ ({', '.join(map(str, sorted(known)))}): the law drawn is d={first}'s"
    return (law[0], law[1], label), note


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
                Binding("1", "plot('compare-nll')", "NLL plot"), Binding("2", "plot('compare-psnr')", "PSNR plot"),
                Binding("e", "export_report", "Export report")]

    def __init__(self, run_dirs: list[Path], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dirs = [Path(p) for p in run_dirs]

    def compose(self) -> ComposeResult:
        yield Static(f"Compare · {len(self.run_dirs)} runs", classes="title-line")
        with Horizontal(id="compare-main"):
            with Vertical(id="compare-left"):
                yield DataTable(id="compare-table", cursor_type="cell", zebra_stripes=True)
                yield Static("cells: mean PSNR of the erased set (dB) · relative distance", classes="hint")
            with TabbedContent(initial="compare-nll", id="compare-plots"):
                with TabPane("1 NLL", id="compare-nll"):
                    yield Histogram("NLL of seeds (nats)", "NLL", id="compare-nll-hist")
                with TabPane("2 PSNR", id="compare-psnr"):
                    yield Histogram("PSNR of reconstructions (dB)", "PSNR", id="compare-psnr-hist")
        yield Static("", id="compare-note", classes="hint")
        yield Footer()

    def action_plot(self, pane: str) -> None:
        self.query_one("#compare-plots", TabbedContent).active = pane

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
        law, note = shared_law(runs)
        self.query_one("#compare-nll-hist", Histogram).set_data(run_series(runs, "nll"), law=law)
        self.query_one("#compare-psnr-hist", Histogram).set_data(run_series(runs, "psnr"))
        box = self.query_one("#compare-note", Static)
        box.update(note)
        box.display = bool(note)
