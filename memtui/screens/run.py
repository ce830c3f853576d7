"""The Run screen: one run directory, live. A thread worker tails events.jsonl / results.jsonl and
posts :class:`RunUpdate` messages (at most ~4 per second); the screen updates the items table in
place, the progress bar, the query/reconstruction preview of the highlighted item, the NLL and PSNR
histograms, the summary, the errors of failed items and the run's log."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from memtui.engine.core.io import read_json_object
from memtui.engine.runs.view import RunView

from .. import jobs
from . import openers, run_actions
from ..widgets.filter_box import FilterBox
from ..widgets.gpu_line import GpuLine
from ..widgets.histogram import Histogram
from ..widgets.items_table import ItemsTable
from ..widgets.log_pane import LogPane
from ..widgets.preview import PreviewPair
from ..widgets.summary import summary_renderable

POLL_S = 0.25  # ~4 Hz
FILTER_DELAY_S = 0.15  # the items filter applies this long after the last keystroke
TABS: tuple[str, ...] = ("preview", "nll", "psnr", "summary", "errors", "log")


@dataclass
class RunState:
    """What the worker has read so far (used only by the worker thread)."""

    status: str = "new"
    total: int | None = None
    done: int = 0
    summary: dict[str, Any] | None = None
    law: tuple[float, float] | None = None
    log_lines: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class RunUpdate(Message):
    """New records of one run (posted from the tail worker)."""

    def __init__(self, results: list[dict[str, Any]], status: str, total: int | None,
                 summary: dict[str, Any] | None, law: tuple[float, float] | None,
                 log_lines: list[str], summary_changed: bool, reset: bool = False) -> None:
        super().__init__()
        self.reset = reset  # the results file was replaced (a restart): the rows shown before are gone
        self.results = results
        self.status = status
        self.total = total
        self.summary = summary
        self.law = law
        self.log_lines = log_lines
        self.summary_changed = summary_changed


class RunScreen(run_actions.RunActions, Screen):
    """One run, live: table, preview, histograms, summary, errors, log."""

    HELP = ("The run's items fill the table as they finish (sortable); the preview shows the "
            "highlighted item's query beside its reconstruction. The run keeps going if you leave "
            "this screen or quit memtui.")
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("enter", "open_item", "Item detail", show=False),
        Binding("slash", "filter_items", "Filter items", show=False),
        Binding("s", "sort_next", "Sort"),
        Binding("r", "sort_reverse", "Reverse"),
        Binding("1", "tab('preview')", "Preview"),
        Binding("2", "tab('nll')", "NLL"),
        Binding("3", "tab('psnr')", "PSNR"),
        Binding("4", "tab('summary')", "Summary"),
        Binding("5", "tab('errors')", "Errors", show=False),
        Binding("6", "tab('log')", "Log", show=False),
        *openers.bindings("run"),
        Binding("x", "cancel_run", "Cancel run"),
        *run_actions.BINDINGS,
        Binding("e", "export_report", "Export report"),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    def __init__(self, run_dir: Path, initial_tab: str = "preview", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial_tab = initial_tab
        self.bar_running = False  # the progress bar's ETA is shown (and sampled) only while running
        self.run_dir = Path(run_dir)
        self.info = jobs.read_run(self.run_dir)
        self.summary: dict[str, Any] | None = None
        self.law: tuple[float, float] | None = None
        self.status = self.info.status
        self.errors = 0  # failed items so far
        self.filter_timer: Any = None
        self.shown_total: int | None = None

    def shows_seed_only(self) -> bool:
        """Whether the run's method reconstructs with more than its seed, so its seed-only PSNR
        differs from its PSNR (nti, edict, bdia; True when the method is not known yet)."""
        from memtui.engine.inversion.registry import get_method

        try:
            return bool(get_method(str(self.info.spec.get("method"))).seed_only_separate(None))
        except ValueError:
            return True

    # ----------------------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        yield Static(self.title_text(), id="run-title", classes="title-line")
        with Horizontal(id="run-head"):
            yield Static("", id="run-status")
            yield ProgressBar(total=None, show_eta=getattr(self.app, "show_eta", True), id="run-progress")
        yield FilterBox("filter items: words in id, set, status, prompt, error (Enter keeps it, Escape "
                        "clears it)", id="items-filter")
        with Horizontal(id="run-main"):
            yield ItemsTable(id="items", seed_only=self.shows_seed_only())
            with Vertical(id="run-side"):
                with TabbedContent(initial=self.initial_tab, id="run-tabs"):
                    with TabPane("Preview", id="preview"):
                        yield PreviewPair(id="pair")
                    with TabPane("NLL", id="nll"):
                        yield Histogram("NLL of seeds (nats)", "NLL", id="nll-hist")
                    with TabPane("PSNR", id="psnr"):
                        yield Histogram("PSNR of reconstructions (dB)", "PSNR", id="psnr-hist")
                    with TabPane("Summary", id="summary-tab"):
                        yield Static("", id="summary")
                    with TabPane("Errors", id="errors-tab"):
                        yield Static("no failed items", id="errors")
                    with TabPane("Log", id="log-tab"):
                        yield LogPane(id="run-log")
        yield GpuLine(enabled=getattr(self.app, "gpu", True))
        yield Footer()

    def title_text(self) -> str:
        i = self.info
        return f"Run {i.name} · {i.analysis} · {i.method} · {self.status}"

    def on_mount(self) -> None:
        self.query_one("#summary", Static).update(summary_renderable(None))
        self.query_one(ItemsTable).focus()
        self.tail()

    # ----------------------------------------------------------------------------- worker
    @work(thread=True, exclusive=True, exit_on_error=False, group="tail")
    def tail(self) -> None:
        """Tail the run directory until the run ends (or the screen goes away)."""
        worker = get_current_worker()
        results_tail = jobs.ResultsTail(self.run_dir)
        events_tail = jobs.JsonlTail(self.run_dir / "events.jsonl")
        state = RunState()
        log_tail = jobs.TextTail(self.run_dir / jobs.LOG_FILE)
        quiet_polls = 0
        while not worker.is_cancelled:
            new_results = results_tail.read_new()
            reset = results_tail.take_reset()
            new_events = events_tail.read_new()
            for ev in new_events:
                if isinstance(ev.get("total"), int):
                    state.extra["total"] = ev["total"]
            total = state.extra.get("total")
            status = jobs.run_status(self.run_dir)
            live = status == "running"
            summary = read_json_object(self.run_dir / "summary.json")
            summary_changed = summary != state.summary
            log_new = log_tail.read_new()
            changed = bool(new_results or new_events or summary_changed or log_new or reset
                           or status != state.status or total != state.total)
            if changed:
                state.status, state.total, state.summary = status, total, summary
                self.post_message(RunUpdate(new_results, status, total, summary, state.law,
                                            log_new, summary_changed, reset))
                quiet_polls = 0
            else:
                quiet_polls += 1
            if state.law is None and (summary or new_results):
                # the law needs the metrics engine (numpy/scipy): computed after the first rows show
                state.law = RunView(self.run_dir, {}, summary or {}).nll_law()
                if state.law is not None:
                    self.post_message(RunUpdate([], status, total, summary, state.law, [], False))
            if not live and quiet_polls >= 2:
                return
            time.sleep(POLL_S)

    @on(RunUpdate)
    def apply_update(self, msg: RunUpdate) -> None:
        table = self.query_one(ItemsTable)
        with self.app.batch_update():
            if msg.reset:
                table.clear_records()
            table.upsert(msg.results)
            if msg.results and table.sort_column != "id":
                table.apply_sort()
            self.status = msg.status
            if not self.info.spec:  # a just-launched run writes its spec.json once it starts
                self.info.spec = read_json_object(self.run_dir / "spec.json") or {}
            self.query_one("#run-title", Static).update(self.title_text())
            records = table.records
            done = len(records)
            errors = [r for r in records.values() if r.get("status") == "error"]
            total = msg.total if msg.total is not None else (done if msg.status == "finished" else None)
            self.set_progress(total, done, msg.status == "running")
            self.errors = len(errors)
            self.show_status(done, total)
            if msg.summary_changed:
                self.summary = msg.summary
                self.query_one("#summary", Static).update(summary_renderable(msg.summary))
            law_changed = msg.law != self.law
            self.law = msg.law
            if msg.results or msg.summary_changed or law_changed:
                self.redraw_plots()
                self.show_errors(errors)
            if msg.log_lines:
                self.query_one(LogPane).add_lines(msg.log_lines)
            self.update_preview()

    def show_status(self, done: int, total: int | None) -> None:
        """The status line: items done of the total, failures, and the filter when one is set."""
        err = f" · {self.errors} failed" if self.errors else ""
        table = self.query_one(ItemsTable)
        shown = (f" · filter: {table.filter_words} ({table.row_count} of {done} shown; / to change, "
                 "Escape to clear)" if table.filter_words else "")
        self.query_one("#run-status", Static).update(
            f"{done}/{total if total is not None else '?'} items{err}{shown}")
        self.shown_total = total

    def set_progress(self, total: int | None, done: int, running: bool) -> None:
        """Update the bar; its ETA shows only while the run is running and starts afresh each
        time the run (re)starts (a total change resets Textual's ETA samples)."""
        bar = self.query_one(ProgressBar)
        if running and not self.bar_running:
            bar.update(total=None)
        bar.update(total=total, progress=done)
        for eta in bar.query("#eta"):
            eta.display = running
        self.bar_running = running

    def redraw_plots(self) -> None:
        records = list(self.query_one(ItemsTable).records.values())
        by_set: dict[str, dict[str, list[float]]] = {"nll": {}, "psnr": {}}
        for rec in records:
            for metric in ("nll", "psnr"):
                v = rec.get(metric)
                if isinstance(v, (int, float)):
                    by_set[metric].setdefault(str(rec.get("set", "?")), []).append(float(v))
        law = (self.law[0], self.law[1], "N(0,I) law") if self.law else None
        self.query_one("#nll-hist", Histogram).set_data(by_set["nll"], law=law)
        self.query_one("#psnr-hist", Histogram).set_data(by_set["psnr"])

    def show_errors(self, errors: list[dict[str, Any]]) -> None:
        text = Text()
        for rec in errors:
            text.append(f"{rec.get('item_id')}", style="bold red")
            text.append(f": {rec.get('error', 'unknown error')}\n")
        self.query_one("#errors", Static).update(text if errors else Text("no failed items", style="dim"))

    # ----------------------------------------------------------------------------- preview
    def update_preview(self) -> None:
        table = self.query_one(ItemsTable)
        item_id = table.current_id()
        pair = self.query_one(PreviewPair)
        if item_id is None:
            pair.show_item(None, None, None)
            return
        rec = table.records.get(item_id, {})
        images = self.run_dir / "images"
        pair.show_item(item_id, images / f"{item_id}.query.png", images / f"{item_id}.recon.png",
                       str(rec.get("prompt", "")))

    @on(DataTable.RowHighlighted, "#items")
    def row_highlighted(self, _: DataTable.RowHighlighted) -> None:
        self.update_preview()

    # ----------------------------------------------------------------------------- actions
    @on(DataTable.RowSelected, "#items")
    def row_selected(self, _: DataTable.RowSelected) -> None:
        self.action_open_item()

    def action_open_item(self) -> None:
        """The highlighted item, large (:class:`~memtui.screens.item.ItemScreen`)."""
        from .item import ItemScreen

        table = self.query_one(ItemsTable)
        item_id = table.current_id()
        if item_id is None:
            self.notify("no item selected", severity="warning")
            return
        self.app.push_screen(ItemScreen(self.run_dir, table.records, table.ids_in_order(), item_id, self.law))

    # ----------------------------------------------------------------------------- filter
    def action_filter_items(self) -> None:
        self.query_one("#items-filter", FilterBox).open(self.query_one(ItemsTable).filter_words)

    @on(Input.Changed, "#items-filter")
    def filter_changed(self, event: Input.Changed) -> None:
        """Filter FILTER_DELAY_S after the last keystroke (refilling 10,000 rows per key would lag)."""
        if self.filter_timer is not None:
            self.filter_timer.stop()
        words = event.value.strip()
        self.filter_timer = self.set_timer(FILTER_DELAY_S, lambda: self.apply_filter(words))

    def apply_filter(self, words: str) -> None:
        self.filter_timer = None
        table = self.query_one(ItemsTable)
        table.set_filter(words)
        self.show_status(len(table.records), self.shown_total)
        self.update_preview()

    @on(Input.Submitted, "#items-filter")
    def filter_submitted(self) -> None:
        self.query_one("#items-filter", FilterBox).display = False
        self.query_one(ItemsTable).focus()

    def action_back(self) -> None:
        """Escape: close the filter box / clear the filter first, else back to the list."""
        box = self.query_one("#items-filter", FilterBox)
        table = self.query_one(ItemsTable)
        if box.display or table.filter_words:
            if self.filter_timer is not None:
                self.filter_timer.stop()
            box.value = ""
            box.display = False
            table.focus()
            self.apply_filter("")
            return
        self.app.pop_screen()

    def action_sort_next(self) -> None:
        col = self.query_one(ItemsTable).cycle_sort()
        self.notify(f"sorted by {col}", timeout=2)

    def action_sort_reverse(self) -> None:
        table = self.query_one(ItemsTable)
        table.apply_sort(reverse=not table.sort_reverse)

    def action_tab(self, tab: str) -> None:
        pane = {"summary": "summary-tab", "errors": "errors-tab", "log": "log-tab"}.get(tab, tab)
        self.query_one("#run-tabs", TabbedContent).active = pane

    def action_cursor_down(self) -> None:
        self.query_one(ItemsTable).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one(ItemsTable).action_cursor_up()

    def action_open_screen(self, module: str) -> None:
        openers.open_screen(self, module)

    def selected_run(self) -> jobs.RunInfo:
        """This screen's run."""
        return jobs.read_run(self.run_dir)

    def after_run_action(self, kind: str, run_dir: Path) -> None:
        """After resume / restart: tail the run again (a restart starts from an empty table);
        after delete: back to the list."""
        if kind == "delete":
            self.app.pop_screen()
            return
        if kind == "restart":
            self.query_one(ItemsTable).clear_records()
        self.status = "running"
        self.query_one("#run-title", Static).update(self.title_text())
        self.tail()

    def action_export_report(self) -> None:
        from ..export import export_report

        export_report(self, [self.run_dir])

    def action_cancel_run(self) -> None:
        if jobs.cancel_run(self.run_dir):
            self.notify(f"asked {self.info.name} to stop; its directory stays resumable")
        else:
            self.notify(f"{self.info.name} is not running", severity="warning")
