"""Sweep directories (``memtui --batch --sweep``, docs/sweeps.md) as the console and
``--sweep-status`` see them: each cell's live row read from its run directory, the sweep command's
liveness from its lock ``SWEEP_DIR/sweep.pid`` (``SweepLock.live_lock``), and starting / stopping
the sweep command. Never imports Textual."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtui.engine.runs.sweep import SWEEP_JSON, SweepLock, read_sweep_json

from .jobs import read_run, run_pid

__all__ = ["sweep_rows", "SweepView", "read_sweep", "is_sweep_dir", "find_sweeps", "cancel_sweep", "start_sweep",
           "reap_started", "LOG_FILE"]


def sweep_rows(sweep_dir: Path) -> list[dict[str, str]]:
    """A sweep directory's cells (docs/sweeps.md), one row per cell: name, status (pending | running |
    finished | failed | cancelled), progress, headline, worker/pid, error; read from each cell's run
    directory. ``memtui --batch --sweep-status`` prints these rows; the console's Sweep screen shows them."""
    data = read_sweep_json(sweep_dir)
    rows = []
    for cell in data["cells"]:
        name = str(cell.get("name"))
        recorded = cell.get("status") or "pending"
        run_dir = Path(sweep_dir) / name
        info = read_run(run_dir)
        summary = info.summary or {}
        if info.status == "running":
            status = "running"
        elif info.status == "finished" and summary.get("complete") is True:
            status = "finished"
        elif info.status in ("failed", "cancelled"):
            status = info.status
        elif info.status == "broken":
            status = "failed"
        else:  # new / incomplete: what the sweep recorded when the cell's process ended
            status = recorded if recorded in ("failed", "cancelled") else "pending"
        pid = run_pid(run_dir) if status == "running" else None
        worker = cell.get("worker")
        if cell.get("job_id"):
            who = f"job {cell['job_id']}"
        else:
            who = "-" if worker is None and pid is None else f"{worker if worker is not None else '?'}/{pid or '-'}"
        error = cell.get("error") if status in ("failed", "cancelled") else None
        rows.append({"cell": name, "status": status, "progress": info.progress_text(),
                     "headline": info.headline() or "-", "worker": who,
                     "error": error or info.problem or ""})
    return rows


LOG_FILE = "console-sweep.log"  # SWEEP_DIR/<this>: output of a sweep command the console started
_STARTED: dict[int, subprocess.Popen] = {}  # sweep commands this console started, until reaped


@dataclass
class SweepView:
    """A sweep directory as the console shows it: sweep.json's name and executor, each cell's axes
    (from sweep.json) merged with its live row (``sweep_rows``), and the sweep
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
