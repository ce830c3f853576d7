"""Runs as the console sees them: spawn a run subprocess, find runs in the runs folder, tail a run
directory, cancel a run.

A run executes in its own process and session (``python -m memtui --batch --spec S --out RUN``,
``start_new_session=True``, output to ``RUN/console.log``), so it outlives the console and an SSH
disconnect. The console only *reads* the run directory (format: ``docs/run-format.md``); its pid is
kept in ``RUN/console.pid`` (until the runner takes its ``run.pid`` lock) so a later console can
show it live again and cancel it (SIGINT to the process group; the batch runner records a ``cancelled`` event and leaves a resumable directory).
Status, progress and summary come from ``memtui.engine.runs.store.RunDir``. Nothing here imports
torch or Textual.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtui.engine.core.io import parse_jsonl
from memtui.engine.runs.store import RunDir
from memtui.engine.runs.view import RunView

PID_FILE = "console.pid"
LOG_FILE = "console.log"


# ------------------------------------------------------------------------------------ reading
class _Tail:
    """Incremental reader of a growing file: :meth:`_complete` returns the bytes of the complete
    lines appended since the last call (a trailing partial line waits for its newline)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0

    def _complete(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return b""
        end = chunk.rfind(b"\n")
        self.offset += end + 1
        return chunk[: end + 1]


class JsonlTail(_Tail):
    """Incremental reader of an append-only JSONL file: each :meth:`read_new` returns the complete
    records appended since the last call (lines that are not JSON objects are skipped)."""

    def read_new(self) -> list[dict[str, Any]]:
        return parse_jsonl(self._complete())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records of a JSONL file ([] when missing)."""
    return JsonlTail(path).read_new()


class TextTail(_Tail):
    """Incremental reader of a growing text file (complete lines only)."""

    def read_new(self) -> list[str]:
        return self._complete().decode("utf-8", errors="replace").splitlines()


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when missing/unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def latest_results(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """item_id -> its last record (a retried item's newer record wins)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        if "item_id" in rec:
            out[str(rec["item_id"])] = rec
    return out


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie we own)."""
    if pid <= 0:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(run_dir: Path) -> int | None:
    """The pid the console recorded for this run, if any."""
    try:
        return int((Path(run_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


@dataclass
class RunInfo:
    """A run directory's state as shown in the console (all read from its files)."""

    path: Path
    spec: dict[str, Any] = field(default_factory=dict)
    status: str = "new"
    done: int = 0
    errors: int = 0
    total: int | None = None
    summary: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def analysis(self) -> str:
        return str(self.spec.get("analysis", "concept"))

    @property
    def method(self) -> str:
        return str(self.spec.get("method", "?"))

    @property
    def live(self) -> bool:
        return self.status == "running"

    def progress_text(self) -> str:
        return f"{self.done}/{self.total}" if self.total else f"{self.done}/?"

    @property
    def view(self) -> RunView:
        """The run's one read-side view (labels, per-set statistics, headline)."""
        return RunView(self.path, self.spec, self.summary or {})

    def headline(self) -> str:
        """The run's key figures when known (the analysis declaration's headline)."""
        return self.view.headline()


def run_status(run_dir: Path) -> str:
    """The run's status from the runs engine (``RunDir.status()``: new | running | finished |
    cancelled | failed | incomplete), with one console addition: a run whose process this console
    spawned is ``running`` while it starts up, before it takes the run lock."""

    status = RunDir(run_dir).status()
    if status in ("new", "incomplete") and is_live(run_dir):
        return "running"
    return status


def read_run(run_dir: Path) -> RunInfo:
    """Read a run directory's spec, status, progress and summary into a :class:`RunInfo`."""

    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    info = RunInfo(path=run_dir, spec=read_json(run_dir / RunDir.SPEC) or {})
    info.status = run_status(run_dir)
    results = rd.read_results()
    info.done, info.total = len(results), rd.progress()[1]
    info.errors = sum(1 for r in results.values() if r.get("status") == "error")
    info.summary = rd.read_summary()
    return info


def is_live(run_dir: Path) -> bool:
    """Whether the run's process is alive: the run lock (``run.pid``) or the pid this console
    recorded when it spawned the run (``console.pid``)."""

    if RunDir(run_dir).live_lock() is not None:
        return True
    pid = read_pid(run_dir)
    return pid is not None and pid_alive(pid)


def run_pid(run_dir: Path) -> int | None:
    """The live process of a run (lock first, then console.pid), or None."""

    lock = RunDir(run_dir).live_lock()
    if lock is not None:
        return int(lock["pid"])
    pid = read_pid(run_dir)
    return pid if pid is not None and pid_alive(pid) else None


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "spec.json").exists() or (Path(path) / PID_FILE).exists()


def find_runs(runs_dir: Path) -> list[RunInfo]:
    """Every run directory directly under ``runs_dir``, sorted by name."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return [read_run(p) for p in sorted(runs_dir.iterdir())
            if p.is_dir() and not p.name.startswith(".") and is_run_dir(p)]


# ---------------------------------------------------------------------------- spawning, cancel
def batch_command(spec_file: Path, run_dir: Path) -> list[str]:
    """The command line a console-launched run executes (the ``memtui --batch`` code path)."""
    return [sys.executable, "-m", "memtui", "--batch", "--spec", str(spec_file), "--out", str(run_dir)]


def spawn_run(spec_file: Path, run_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a run in its own session (it survives the console); output goes to
    ``run_dir/console.log``; the pid is written to ``run_dir/console.pid``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(batch_command(spec_file, run_dir), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env, close_fds=True)
    tmp = run_dir / (PID_FILE + ".tmp")
    tmp.write_text(str(proc.pid))
    os.replace(tmp, run_dir / PID_FILE)
    return proc


def cancel_run(run_dir: Path, sig: int = signal.SIGINT) -> bool:
    """Ask a live run to stop (signal to its process group). False if it is not running."""
    pid = run_pid(run_dir)
    if pid is None:
        return False
    try:
        os.killpg(os.getpgid(pid), sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def read_log_tail(run_dir: Path, lines: int = 20) -> list[str]:
    """The last lines of the run's console.log (its stderr/stdout)."""
    try:
        text = (Path(run_dir) / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]
