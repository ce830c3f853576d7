"""The Sweep screen: one sweep directory (``memtui --batch --sweep``, docs/sweeps.md), live. A grid
of its cells: rows are checkpoints (the erasure method with the checkpoint's name, as the report
labels them), columns the (concept, method, analysis) combinations present; each cell shows its
status and headline. Enter opens a cell's run; ``x`` asks the sweep command to stop (SIGINT: it
stops every cell resumably).

Reading, starting and stopping the sweep is ``memtui.sweeps`` (the rows ``--sweep-status`` prints).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from memtui.engine.runs.sweep import checkpoint_label

from ..sweeps import LOG_FILE, SweepView, cancel_sweep, read_sweep, reap_started, start_sweep
from ..widgets.status import STATUS_STYLE

__all__ = ["SweepScreen", "row_label", "cell_text"]

POLL_S = 2.0


# ---------------------------------------------------------------------------- grid layout
def row_label(cell: dict[str, Any], many_bases: bool) -> str:
    """The checkpoint's erasure method with its name when they differ (as the report labels rows),
    prefixed by the base when the sweep has more than one."""
    label = checkpoint_label(cell.get("erasure"), cell.get("checkpoint"))
    return f"{cell.get('base')} · {label}" if many_bases else label


def column_label(key: tuple[str, str, str]) -> str:
    return " · ".join(key)


def column_key(cell: dict[str, Any]) -> tuple[str, str, str]:
    return (str(cell.get("concept")), str(cell.get("method")), str(cell.get("analysis")))


def cell_text(cell: dict[str, Any]) -> Text:
    """``status · headline`` (with the items' progress while not finished), styled by status."""
    status = str(cell.get("status"))
    parts = [status]
    if status in ("running", "cancelled", "failed") and cell.get("progress"):
        parts.append(str(cell["progress"]))
    if cell.get("headline") and cell["headline"] != "-":
        parts.append(str(cell["headline"]))
    return Text(" · ".join(parts), style=STATUS_STYLE.get(status, ""))


class SweepRead(Message):
    """A fresh read of the sweep directory (from the refresh worker)."""

    def __init__(self, view: SweepView) -> None:
        super().__init__()
        self.view = view


class SweepScreen(Screen):
    """One sweep: its grid of cells, live."""

    HELP = ("A sweep's cells as a grid: rows are the checkpoints (erasure method and checkpoint), "
            "columns the concept · method · analysis combinations; each cell shows its status and "
            "headline, refreshed every 2 s. Enter opens the cell's run; x stops the sweep command "
            "(every cell stops resumably); R runs the sweep command again in the background, which "
            "skips finished cells and resumes the others.")
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("enter", "open_cell", "Open cell", show=False),
        Binding("x", "cancel_sweep", "Cancel sweep"),
        Binding("R", "start_sweep", "Run/resume sweep"),
    ]

    def __init__(self, sweep_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sweep_dir = Path(sweep_dir)
        self.view = SweepView(path=self.sweep_dir, sweep_name=self.sweep_dir.name)
        self.columns: list[tuple[str, str, str]] = []
        self.rows: list[str] = []
        self.by_coord: dict[tuple[str, tuple[str, str, str]], dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Static(self.title_text(), id="sweep-title", classes="title-line")
        table: DataTable = DataTable(id="sweep-grid", cursor_type="cell", zebra_stripes=True)
        yield table
        yield Static("", id="sweep-errors")
        yield Footer()

    def title_text(self) -> str:
        v = self.view
        live = f" · running (pid {v.pid})" if v.pid is not None else ""
        what = v.problem or v.counts_text()
        return f"Sweep {v.sweep_name} · {v.path} · executor {v.executor}{live} · {what}"

    def on_mount(self) -> None:
        self.query_one("#sweep-grid", DataTable).focus()
        self.refresh_loop()

    # ------------------------------------------------------------------------------ worker
    @work(thread=True, exclusive=True, exit_on_error=False, group="sweep-refresh")
    def refresh_loop(self) -> None:
        """Re-read the sweep directory every ``POLL_S`` until the screen goes away."""
        worker = get_current_worker()
        while not worker.is_cancelled:
            reap_started()
            self.post_message(SweepRead(read_sweep(self.sweep_dir)))
            for _ in range(int(POLL_S / 0.1)):
                if worker.is_cancelled:
                    return
                time.sleep(0.1)

    @on(SweepRead)
    def show(self, msg: SweepRead) -> None:
        self.view = view = msg.view
        self.query_one("#sweep-title", Static).update(self.title_text())
        many_bases = len({c.get("base") for c in view.cells}) > 1
        rows = list(dict.fromkeys(row_label(c, many_bases) for c in view.cells))
        columns = list(dict.fromkeys(column_key(c) for c in view.cells))
        self.by_coord = {(row_label(c, many_bases), column_key(c)): c for c in view.cells}
        table = self.query_one("#sweep-grid", DataTable)
        if rows != self.rows or columns != self.columns:
            cursor = table.cursor_coordinate
            table.clear(columns=True)
            table.add_column("checkpoint", key="__row__")
            for col in columns:
                table.add_column(column_label(col), key=column_label(col))
            for row in rows:
                table.add_row(row, *(self.cell_renderable(row, col) for col in columns), key=row)
            self.rows, self.columns = rows, columns
            if rows:
                table.cursor_coordinate = table.validate_cursor_coordinate(cursor)
        else:
            for row in rows:
                for col in columns:
                    table.update_cell(row, column_label(col), self.cell_renderable(row, col))
        errors = Text()
        for c in view.cells:
            if c.get("status") == "failed" and c.get("error"):
                errors.append(f"{c['cell']}", style="bold red")
                errors.append(f": {c['error']}\n")
        self.query_one("#sweep-errors", Static).update(errors)

    def cell_renderable(self, row: str, col: tuple[str, str, str]) -> Text:
        cell = self.by_coord.get((row, col))
        return cell_text(cell) if cell else Text("·", style="dim")

    # ------------------------------------------------------------------------------ actions
    def current_cell(self) -> dict[str, Any] | None:
        table = self.query_one("#sweep-grid", DataTable)
        if not self.rows:
            return None
        r, c = table.cursor_coordinate.row, table.cursor_coordinate.column
        if not (0 <= r < len(self.rows)) or not (1 <= c <= len(self.columns)):
            return None
        return self.by_coord.get((self.rows[r], self.columns[c - 1]))

    @on(DataTable.CellSelected, "#sweep-grid")
    def cell_selected(self, _: DataTable.CellSelected) -> None:
        self.action_open_cell()

    def action_open_cell(self) -> None:
        from .run import RunScreen

        cell = self.current_cell()
        if cell is None:
            self.notify("no cell here", severity="warning")
            return
        if not Path(cell["path"]).is_dir():
            self.notify(f"{cell['cell']} has not started yet", severity="warning")
            return
        self.app.push_screen(RunScreen(cell["path"]))

    def action_cancel_sweep(self) -> None:
        pid = cancel_sweep(self.sweep_dir)
        if pid is None:
            self.notify(f"sweep {self.view.sweep_name} is not running", severity="warning")
        else:
            self.notify(f"asked sweep {self.view.sweep_name} (pid {pid}) to stop; its cells stay resumable")

    def action_start_sweep(self) -> None:
        try:
            proc = start_sweep(read_sweep(self.sweep_dir))
        except (ValueError, OSError) as e:
            self.notify(str(e), severity="warning")
            return
        self.notify(f"started sweep {self.view.sweep_name} (pid {proc.pid}); output in {LOG_FILE}")
