"""The Sweep screen: one sweep directory (``memtui --batch --sweep``, docs/sweeps.md), live. A grid
of its cells: rows are checkpoints (the erasure method with the checkpoint's name, as the report
labels them), columns the (concept, method, analysis) combinations present; each cell shows its
status and headline. Enter opens a cell's run; ``x`` asks the sweep command to stop (SIGINT: it
stops every cell resumably).

The per-cell state is ``memtui.jobs.sweep_rows`` (what ``--sweep-status`` prints) (read from each cell's run directory);
the sweep command's liveness is its lock, ``SWEEP_DIR/sweep.pid`` (``SweepLock.live_lock``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
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

from memtui.engine.runs.sweep import SWEEP_JSON, SweepLock, read_sweep_json

from ..jobs import sweep_rows

__all__ = ["SweepView", "read_sweep", "is_sweep_dir", "find_sweeps", "cancel_sweep", "start_sweep", "SweepScreen"]

POLL_S = 2.0
LOG_FILE = "console-sweep.log"  # SWEEP_DIR/<this>: output of a sweep command the console started
_STARTED: dict[int, subprocess.Popen] = {}  # sweep commands this console started, until reaped
# a cell's status (memtui.jobs.sweep_rows) -> style, as the Browse screen colours run statuses
CELL_STYLE = {"running": "bold green", "finished": "cyan", "failed": "bold red", "cancelled": "yellow",
              "broken": "bold red", "incomplete": "yellow", "pending": "dim"}


@dataclass
class SweepView:
    """A sweep directory as the console shows it: sweep.json's name and executor, each cell's axes
    (from sweep.json) merged with its live row (``memtui.jobs.sweep_rows``), and the sweep
    command's pid while it holds ``sweep.pid``. ``problem`` says why the sweep cannot be read (then ``cells`` is [])."""

    path: Path
    sweep_name: str = ""  # sweep.json's name (the folder's name is ``name``)
    executor: str = "?"
    source: str | None = None
    cells: list[dict[str, Any]] = field(default_factory=list)
    pid: int | None = None
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def analysis(self) -> str:
        return "sweep"

    @property
    def method(self) -> str:
        return ",".join(dict.fromkeys(str(c.get("method")) for c in self.cells)) or "?"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cells:
            out[c["status"]] = out.get(c["status"], 0) + 1
        return out

    @property
    def status(self) -> str:
        if self.problem:
            return "broken"
        if self.pid is not None:
            return "running"
        counts = self.counts()
        if self.cells and counts.get("finished", 0) == len(self.cells):
            return "finished"
        for s in ("failed", "cancelled"):
            if counts.get(s):
                return s
        return "incomplete"

    def progress_text(self) -> str:
        return f"{self.counts().get('finished', 0)}/{len(self.cells)} cells"

    def counts_text(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in self.counts().items()) or "no cells"

    def headline(self) -> str:
        return self.problem or self.counts_text()


def is_sweep_dir(path: Path) -> bool:
    try:
        return (Path(path) / SWEEP_JSON).is_file()
    except OSError:
        return False


def read_sweep(path: Path) -> SweepView:
    """Read a sweep directory (never raises: a damaged sweep.json is reported in ``problem``)."""
    path = Path(path)
    view = SweepView(path=path, sweep_name=path.name)
    try:
        data = read_sweep_json(path)
        rows = {r["cell"]: r for r in sweep_rows(path)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        view.problem = str(e) or type(e).__name__
        return view
    view.sweep_name = str(data.get("name") or path.name)
    executor = data.get("executor")
    view.executor = str(executor.get("name", "?")) if isinstance(executor, dict) else str(executor or "?")
    view.source = data.get("source") if isinstance(data.get("source"), str) else None
    for cell in data["cells"]:
        if not isinstance(cell, dict):
            continue
        name = str(cell.get("name"))
        view.cells.append({**{k: cell.get(k) for k in ("base", "checkpoint", "concept", "erasure", "method",
                                                      "analysis")},
                           **rows.get(name, {"cell": name, "status": "pending", "progress": "0/?",
                                             "headline": "-", "worker": "-", "error": ""}),
                           "path": path / name})
    lock = SweepLock(path).live_lock()
    view.pid = int(lock["pid"]) if lock else None
    return view


def find_sweeps(runs_dir: Path) -> list[SweepView]:
    """Every sweep directory directly under ``runs_dir`` (a folder with sweep.json), by name."""
    try:
        entries = sorted(p for p in Path(runs_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [read_sweep(p) for p in entries if is_sweep_dir(p)]


def cancel_sweep(path: Path, sig: int = signal.SIGINT) -> int | None:
    """Ask the sweep command driving ``path`` to stop: SIGINT to the live process named by its
    ``sweep.pid`` on this host (it stops every cell after its current batch, resumably, and exits
    130). Returns the pid signalled, or None when no sweep command is running it."""
    lock = SweepLock(path).live_lock()
    if not lock:
        return None
    pid = int(lock["pid"])
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return None
    return pid


def reap_started() -> None:
    """Collect the exit status of the sweep commands this console started that have ended."""
    for pid, proc in list(_STARTED.items()):
        if proc.poll() is not None:
            _STARTED.pop(pid, None)


def start_sweep(view: SweepView) -> subprocess.Popen:
    """Run (resume) the sweep: ``python -m memtui --batch --sweep <sweep.json's source> --out
    SWEEP_DIR`` in its own session (it outlives the console), output to ``SWEEP_DIR/console-sweep.log``.
    ValueError when the sweep file is not known or gone, or a sweep command already runs it."""
    if view.pid is not None:
        raise ValueError(f"sweep {view.sweep_name} is already running (pid {view.pid})")
    if not view.source or not Path(view.source).is_file():
        raise ValueError(f"the sweep file {view.source or '(not recorded)'} is not there; "
                         "run memtui --batch --sweep FILE --out SWEEP_DIR in a shell")
    cmd = [sys.executable, "-m", "memtui", "--batch", "--sweep", view.source, "--out", str(view.path)]
    with open(view.path / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    reap_started()
    _STARTED[proc.pid] = proc
    return proc


# ---------------------------------------------------------------------------- grid layout
def row_label(cell: dict[str, Any], many_bases: bool) -> str:
    """The checkpoint's erasure method with its name when they differ (as the report labels rows),
    prefixed by the base when the sweep has more than one."""
    e, c = cell.get("erasure"), cell.get("checkpoint")
    label = f"{e} ({c})" if e and c and e != c else str(e or c)
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
    return Text(" · ".join(parts), style=CELL_STYLE.get(status, ""))


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
