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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtui.engine.core.io import parse_jsonl
from memtui.engine.runs.store import RunDir
from memtui.engine.runs.store import pid_alive as store_pid_alive
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
        self.ident: tuple[int, int] | None = None  # (device, inode) of the file being read
        self.replaced = False  # set when the file was replaced or truncated (read again from 0)

    def _complete(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                ident = (st.st_dev, st.st_ino)
                if self.ident is not None and (ident != self.ident or st.st_size < self.offset):
                    self.offset, self.replaced = 0, True  # a restart moved the old file away
                self.ident = ident
                f.seek(self.offset)
                chunk = f.read()
        except OSError:  # missing, or unreadable (a broken run: read_run reports why)
            return b""
        end = chunk.rfind(b"\n")
        self.offset += end + 1
        return chunk[: end + 1]


class JsonlTail(_Tail):
    """Incremental reader of an append-only JSONL file: each :meth:`read_new` returns the complete
    records appended since the last call (lines that are not JSON objects are skipped)."""

    def read_new(self) -> list[dict[str, Any]]:
        return parse_jsonl(self._complete())


class ResultsTail:
    """Incremental reader of a run's records over all its results files (``results.jsonl`` and,
    during a sharded session, each shard's): :meth:`read_new` returns the records appended since
    the last call, the run file's first. Records folded from a shard into the run file come again
    (the same records: the latest record per id still wins)."""

    def __init__(self, run_dir: Path) -> None:
        self.rd = RunDir(run_dir)
        self.tails: dict[Path, JsonlTail] = {}

    def read_new(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path in self.rd.result_files():
            out += self.tails.setdefault(path, JsonlTail(path)).read_new()
        return out

    def take_reset(self) -> bool:
        """Whether the run's results file was replaced (``--restart``) since the last call: the
        records read before are gone and :meth:`read_new` started again from its first record."""
        tail = self.tails.get(self.rd.path / RunDir.RESULTS)
        if tail is None or not tail.replaced:
            return False
        tail.replaced = False
        return True


class TextTail(_Tail):
    """Incremental reader of a growing text file (complete lines only)."""

    def read_new(self) -> list[str]:
        return self._complete().decode("utf-8", errors="replace").splitlines()


_CHILDREN: dict[int, subprocess.Popen] = {}  # runs this console spawned, until reaped


def reap_children() -> None:
    """Reap the runs this console spawned that have exited (``Popen.poll`` collects their exit
    status), so none is left a zombie that would hold its run's lock."""
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            _CHILDREN.pop(pid, None)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is alive: a run this console spawned until it exits (then it is
    reaped), any other process as ``memtui.engine.runs.store.pid_alive`` sees it (a zombie or
    dead process is not alive). Never collects the exit status of a child it did not spawn."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return True
        _CHILDREN.pop(pid, None)
        return False
    reap_children()
    return store_pid_alive(pid)


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
    problem: str | None = None  # why a ``broken`` run cannot be read (file and reason)

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
        """The run's key figures when known (the analysis declaration's headline; "" when broken)."""
        return "" if self.problem else self.view.headline()


def run_status(run_dir: Path) -> str:
    """The run's status from the runs engine (``RunDir.status()``: new | running | finished |
    cancelled | failed | incomplete), with one console addition: a run whose process this console
    spawned is ``running`` while it starts up, before it takes the run lock (also when it resumes
    or restarts a cancelled, failed or finished run)."""

    status = RunDir(run_dir).status()
    if status != "running" and is_live(run_dir):
        return "running"
    return status


BROKEN = "broken"  # the status of a run directory whose files cannot be read (see RunInfo.problem)
_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError)


def read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when missing; raises ``ValueError`` naming the file when it is
    not valid JSON or not an object, and ``OSError`` when it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path.name} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object (it holds a {type(data).__name__})")
    return data


def describe_problem(e: BaseException) -> str:
    """A one-line reason for a read failure, naming the file when known."""
    if isinstance(e, OSError) and e.filename:
        return f"{Path(str(e.filename)).name}: {e.strerror or type(e).__name__}"
    return str(e) or type(e).__name__


def read_run(run_dir: Path) -> RunInfo:
    """Read a run directory's spec, status, progress and summary into a :class:`RunInfo`. A run
    whose files cannot be read is returned with status ``broken`` and the reason in ``problem``
    (never an exception, so one damaged run cannot hide the others)."""

    run_dir = Path(run_dir)
    info = RunInfo(path=run_dir)
    try:
        rd = RunDir(run_dir)
        info.spec = read_object(run_dir / RunDir.SPEC) or {}
        info.summary = read_object(run_dir / RunDir.SUMMARY)
        info.status = run_status(run_dir)
        results = rd.read_results()
        info.done, info.total = len(results), rd.progress()[1]
        info.errors = sum(1 for r in results.values() if r.get("status") == "error")
        info.view.headline()  # labels and figures must be readable too
    except _READ_ERRORS as e:
        info.status, info.problem = BROKEN, describe_problem(e)
        if not isinstance(info.spec, dict):
            info.spec = {}
        info.summary = None
    return info


def read_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """item_id -> the item's latest results record (every results file, shards included); {} when
    the run has none or they cannot be read."""
    try:
        return RunDir(run_dir).read_results()
    except _READ_ERRORS:
        return {}


def is_live(run_dir: Path) -> bool:
    """Whether the run's process is alive: the run lock (``run.pid``) or the pid this console
    recorded when it spawned the run (``console.pid``)."""

    reap_children()
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
    """Whether ``path`` holds a spec.json or console.pid (True when it cannot be looked into: it is
    then listed as a broken run with the reason rather than silently left out)."""
    try:
        return (Path(path) / "spec.json").exists() or (Path(path) / PID_FILE).exists()
    except OSError:
        return True


def find_runs(runs_dir: Path) -> list[RunInfo]:
    """Every run directory directly under ``runs_dir``, sorted by name; damaged ones are included
    with status ``broken`` (see :func:`read_run`)."""
    return RunScanner().scan(runs_dir)


_STAMPED = ("", RunDir.SPEC, RunDir.EVENTS, RunDir.RESULTS, RunDir.SUMMARY, RunDir.LOCK, PID_FILE)


def run_stamp(run_dir: Path) -> tuple:
    """What changes whenever a run directory's readable state can: the folder's own (mtime, inode)
    (a file added, renamed over or removed) and each appended-to or rewritten file's (mtime, size,
    inode)."""
    out: list[tuple[int, int, int] | None] = []
    for name in _STAMPED:
        try:
            st = os.stat(Path(run_dir) / name)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_mtime_ns, st.st_size if name else 0, st.st_ino))
    return tuple(out)


class RunScanner:
    """:func:`find_runs` that re-reads only the runs that changed since its last scan: a run that
    is not running and whose :func:`run_stamp` is unchanged keeps its :class:`RunInfo` (the same
    object, so callers can cache what they derive from it). A running run is always read again
    (its process may have ended without touching a file)."""

    def __init__(self) -> None:
        self.cache: dict[Path, tuple[tuple, RunInfo]] = {}
        self.reads = 0  # read_run calls so far (for tests and benchmarks)

    def scan(self, runs_dir: Path) -> list[RunInfo]:
        """Every run directory directly under ``runs_dir``, sorted by name (see :func:`find_runs`)."""
        runs_dir = Path(runs_dir)
        try:
            entries = sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            self.cache.clear()
            return []
        out: list[RunInfo] = []
        seen: dict[Path, tuple[tuple, RunInfo]] = {}
        for p in entries:
            if not is_run_dir(p):
                continue
            stamp = run_stamp(p)
            cached = self.cache.get(p)
            if cached is not None and cached[0] == stamp and cached[1].status != "running":
                info = cached[1]
            else:
                info = read_run(p)
                self.reads += 1
            seen[p] = (stamp, info)
            out.append(info)
        self.cache = seen
        return out


# ---------------------------------------------------------------------------- spawning, cancel
def batch_command(spec_file: Path, run_dir: Path, extra: Sequence[str] = ()) -> list[str]:
    """The command line a console-launched run executes (the ``memtui --batch`` code path);
    ``extra``: further flags (``--restart``)."""
    return [sys.executable, "-m", "memtui", "--batch", "--spec", str(spec_file), "--out", str(run_dir), *extra]


def spawn_run(spec_file: Path, run_dir: Path, env: dict[str, str] | None = None,
              extra: Sequence[str] = ()) -> subprocess.Popen:
    """Start a run in its own session (it survives the console); output goes to
    ``run_dir/console.log``; the pid is written to ``run_dir/console.pid``. The console keeps the
    Popen and reaps it once it exits (:func:`reap_children`)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(batch_command(spec_file, run_dir, extra), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env=env, close_fds=True)
    reap_children()
    _CHILDREN[proc.pid] = proc  # polled by pid_alive / reap_children: reaped when it exits
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
