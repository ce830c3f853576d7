"""The Browse screen (first screen): checkpoints, datasets and runs in three tabs. Enter opens a
run (or inspects a checkpoint/dataset); ``i`` inspects; ``n`` starts the New-run form."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static, TabbedContent, TabPane

from .. import catalog, jobs
from . import openers, run_actions
from ..widgets.gpu_line import GpuLine
from ..widgets.status import STATUS_STYLE
from ..widgets.tables import sync_table
from ..widgets.filter_box import FilterBox, words_match
from ..widgets.log_pane import LogPane

class Scanned(Message):
    """Entries of one Browse table, from the scan worker."""

    def __init__(self, table: str, entries: list[Any]) -> None:
        super().__init__()
        self.table = table
        self.entries = entries


class BrowseScreen(run_actions.RunActions, Screen):
    """Checkpoints, datasets and runs."""

    HELP = ("Checkpoints come from the configured folders and the local Hugging Face cache; "
            "datasets from the configured dataset folders; runs from the runs folder. Runs started "
            "earlier (even before memtui was restarted) show their live status.")
    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        *openers.bindings("browse"),
        Binding("space", "mark", "Mark run", show=False),
        Binding("x", "cancel_run", "Cancel run", show=False),
        *run_actions.BINDINGS,
        Binding("r", "refresh", "Refresh"),
        Binding("slash", "filter_runs", "Filter runs", show=False),
        Binding("escape", "clear_filter", "Clear the filter", show=False),
        Binding("1", "tab('runs')", "Runs", show=False),
        Binding("2", "tab('checkpoints')", "Checkpoints", show=False),
        Binding("3", "tab('datasets')", "Datasets", show=False),
        Binding("4", "tab('log')", "Log", show=False),
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entries: dict[str, list[Any]] = {"runs": [], "checkpoints": [], "datasets": []}  # shown
        self.scanned: dict[str, list[Any]] = {"runs": [], "checkpoints": [], "datasets": []}  # all
        self.run_filter = ""  # words every shown run's row must contain (``/``)
        self.marked: set[str] = set()
        self.scanner = jobs.RunScanner()  # re-reads only the runs that changed since the last scan
        self.scanner_root: Any = None
        self.row_cache: dict[str, tuple[Any, bool, tuple]] = {}  # path -> (entry, marked, cells)

    def compose(self) -> ComposeResult:
        yield Static(self.title_text(), id="browse-title", classes="title-line")
        with TabbedContent(initial="runs", id="browse-tabs"):
            with TabPane("1 Runs", id="runs"):
                yield Static("", id="runs-hint", classes="hint")
                yield FilterBox("filter runs: words in name, status, analysis, method, headline "
                                "(Enter keeps it, Escape clears it)", id="runs-filter")
                yield self.table("runs", (("mark", " "), ("name", "run"), ("status", "status"),
                                          ("analysis", "analysis"), ("method", "method"),
                                          ("progress", "items"), ("headline", "headline")))
            with TabPane("2 Checkpoints", id="checkpoints"):
                yield self.table("checkpoints", tuple((c, c) for c in ("name", "kind", "size", "source", "where")))
            with TabPane("3 Datasets", id="datasets"):
                yield self.table("datasets", tuple((c, c) for c in ("name", "layout", "images", "where")))
            with TabPane("4 Log", id="log"):
                yield LogPane(id="app-log")
        yield GpuLine(enabled=getattr(self.app, "gpu", True))
        yield Footer()

    @staticmethod
    def table(name: str, columns: tuple[tuple[str, str], ...]) -> DataTable:
        """A Browse table with its columns (added before any scan result can arrive)."""
        t: DataTable = DataTable(id=f"{name}-table", cursor_type="row", zebra_stripes=True)
        for key, label in columns:
            t.add_column(label, key=key)
        return t

    def title_text(self) -> str:
        return f"memtui · runs in {self.app.cfg.runs_path}"

    def on_mount(self) -> None:
        self.query_one("#runs-table", DataTable).focus()
        self.query_one("#app-log", LogPane).add_lines(list(getattr(self.app, "messages", [])))
        self.action_refresh()
        self.set_interval(2.0, self.scan_runs)

    def roots(self) -> tuple:
        cfg = self.app.cfg
        return (tuple(cfg.checkpoint_roots), tuple(cfg.dataset_roots), str(cfg.runs_path))

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.query_one("#browse-title", Static).update(self.title_text())
            self.scan_runs()
            if self.roots() != self.scanned_roots:
                self.scan_assets()

    # ------------------------------------------------------------------------------ scanning
    @work(thread=True, exclusive=True, exit_on_error=False, group="scan-runs")
    def scan_runs(self) -> None:
        from ..sweeps import find_sweeps

        if not self.is_current:  # another screen is on top: on_screen_resume scans again
            return
        runs_path = self.app.cfg.runs_path
        if runs_path != self.scanner_root:
            self.scanner, self.scanner_root = jobs.RunScanner(), runs_path
        entries = self.scanner.scan(runs_path) + find_sweeps(runs_path)  # a sweep folder: one row
        self.post_message(Scanned("runs", sorted(entries, key=lambda e: e.name)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan-assets")
    def scan_assets(self) -> None:
        cfg = self.app.cfg
        self.scanned_roots = self.roots()
        self.post_message(Scanned("datasets", catalog.scan_datasets(cfg.dataset_roots) + catalog.builtin_datasets()))
        quick = catalog.scan_checkpoints(cfg.checkpoint_roots, detect=False) + catalog.builtin_checkpoints(detect=False)
        self.post_message(Scanned("checkpoints", quick))
        if quick:
            self.post_message(Scanned("checkpoints", catalog.scan_checkpoints(cfg.checkpoint_roots)
                                      + catalog.builtin_checkpoints()))

    @on(Scanned)
    def show_scan(self, msg: Scanned) -> None:
        self.scanned[msg.table] = msg.entries
        if msg.table == "runs":
            keep = {str(e.path) for e in msg.entries}
            self.row_cache = {k: v for k, v in self.row_cache.items() if k in keep}
        self.show_entries(msg.table)

    def show_entries(self, table_name: str) -> None:
        """Show the scanned entries of a table (the runs through :attr:`run_filter`)."""
        shown: list[tuple[Any, tuple]] = []
        for e in self.scanned[table_name]:
            if table_name == "runs":
                cells = self.cached_run_row(e)
                if self.run_filter and not words_match(cells, self.run_filter):
                    continue
            elif table_name == "checkpoints":
                cells = (e.name, e.kind_label, e.size, e.source, e.detail)
            else:
                cells = (e.name, e.kind, e.size, e.detail)
            shown.append((e, cells))
        self.entries[table_name] = [e for e, _ in shown]
        rows = [(str(e.path), cells) for e, cells in shown]
        sync_table(self.query_one(f"#{table_name}-table", DataTable), rows)
        if table_name == "runs":
            hint = self.query_one("#runs-hint", Static)
            if self.run_filter:
                hint.update(f"filter: {self.run_filter} ({len(rows)} of {len(self.scanned['runs'])} runs; "
                            "/ to change, Escape to clear)")
                hint.display = True
            else:
                hint.update(self.runs_hint(bool(rows)))
                hint.display = not rows

    def runs_hint(self, have_runs: bool) -> str:
        if have_runs:
            return ""
        cfg = self.app.cfg
        from ..demo_world import demo_available

        if not cfg.checkpoint_roots and not cfg.dataset_roots and demo_available():
            return ("No runs yet. Press n to run the built-in demo world: a tiny model with the "
                    "concept 'circle' erased (ctrl+g to add your own checkpoint and dataset folders).")
        return "No runs yet. Press n to start one."

    def cached_run_row(self, r: Any) -> tuple:
        """:meth:`run_row`, built once per scanned entry (the scanner keeps unchanged runs' objects)."""
        key, marked = str(r.path), str(r.path) in self.marked
        hit = self.row_cache.get(key)
        if hit is not None and hit[0] is r and hit[1] == marked:
            return hit[2]
        cells = self.run_row(r)
        self.row_cache[key] = (r, marked, cells)
        return cells

    def run_row(self, r: Any) -> tuple:
        """A run's row, or a sweep's (``SweepView``: analysis "sweep", progress "k/n cells")."""
        mark = "●" if str(r.path) in self.marked else " "
        status = Text(r.status, style=STATUS_STYLE.get(r.status, ""))
        last = Text(r.problem, style="red") if r.problem else r.headline()
        return (mark, r.name, status, r.analysis, r.method, r.progress_text(), last)

    # ------------------------------------------------------------------------------ helpers
    def current_tab(self) -> str:
        return self.query_one("#browse-tabs", TabbedContent).active

    def current_entry(self) -> Any | None:
        tab = self.current_tab()
        if tab not in self.entries:
            return None
        table = self.query_one(f"#{tab}-table", DataTable)
        rows = self.entries[tab]
        if not rows or table.cursor_row >= len(rows):
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((e for e in rows if str(e.path) == key), None)

    # ------------------------------------------------------------------------------ filter
    def action_filter_runs(self) -> None:
        self.action_tab("runs")
        self.query_one("#runs-filter", FilterBox).open(self.run_filter)

    @on(Input.Changed, "#runs-filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.run_filter = event.value.strip()
        self.show_entries("runs")

    @on(Input.Submitted, "#runs-filter")
    def filter_submitted(self) -> None:
        self.query_one("#runs-filter", Input).display = False
        self.query_one("#runs-table", DataTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#runs-filter", Input)
        if not self.run_filter and not box.display:
            return
        self.run_filter = ""
        box.value = ""
        box.display = False
        self.query_one("#runs-table", DataTable).focus()
        self.show_entries("runs")

    # ------------------------------------------------------------------------------ actions
    def action_refresh(self) -> None:
        self.scanned_roots = self.roots()
        self.scan_runs()
        self.scan_assets()

    def action_tab(self, tab: str) -> None:
        self.query_one("#browse-tabs", TabbedContent).active = tab
        if tab in self.entries:
            self.query_one(f"#{tab}-table", DataTable).focus()

    def action_cursor(self, direction: str) -> None:
        tab = self.current_tab()
        if tab in self.entries:
            table = self.query_one(f"#{tab}-table", DataTable)
            (table.action_cursor_down if direction == "down" else table.action_cursor_up)()

    @on(DataTable.RowSelected)
    def row_selected(self, _: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        entry = self.current_entry()
        if entry is None:
            return
        from ..sweeps import SweepView
        from .sweep import SweepScreen

        if isinstance(entry, jobs.RunInfo):
            from .run import RunScreen

            self.app.push_screen(RunScreen(entry.path))
        elif isinstance(entry, SweepView):
            self.app.push_screen(SweepScreen(entry.path))
        else:
            self.action_open_screen("inspect")

    def action_open_screen(self, module: str) -> None:
        openers.open_screen(self, module)

    def selected_run(self) -> jobs.RunInfo | None:
        """The run under the cursor (None on the other tabs)."""
        entry = self.current_entry()
        return entry if isinstance(entry, jobs.RunInfo) else None

    def after_run_action(self, kind: str, run_dir: Any) -> None:
        """List the runs again after resume / restart / delete."""
        self.marked.discard(str(run_dir))
        self.action_refresh()

    def marked_runs(self) -> list[jobs.RunInfo]:
        """The runs marked with space, in list order."""
        return [r for r in self.all_runs() if str(r.path) in self.marked]

    def all_runs(self) -> list[jobs.RunInfo]:
        """The runs listed (sweep rows left out)."""
        return [e for e in self.entries["runs"] if isinstance(e, jobs.RunInfo)]

    def action_mark(self) -> None:
        entry = self.current_entry()
        if not isinstance(entry, jobs.RunInfo):
            return
        key = str(entry.path)
        self.marked.symmetric_difference_update({key})
        table = self.query_one("#runs-table", DataTable)
        table.update_cell(key, "mark", "●" if key in self.marked else " ")

    def action_cancel_run(self) -> None:
        from ..sweeps import SweepView, cancel_sweep

        entry = self.current_entry()
        if isinstance(entry, SweepView):
            ok = cancel_sweep(entry.path) is not None
            self.notify(f"asked sweep {entry.name} to stop" if ok else f"sweep {entry.name} is not running",
                        severity="information" if ok else "warning")
        elif isinstance(entry, jobs.RunInfo):
            ok = jobs.cancel_run(entry.path)
            self.notify(f"asked {entry.name} to stop" if ok else f"{entry.name} is not running",
                        severity="information" if ok else "warning")
