"""A sweep: the paper's grid (base models × ablated checkpoints × inversion methods × analyses) as
one file, expanded into cells, each an ordinary run directory ``SWEEP_DIR/<cell>/``.

This module parses and validates the sweep file (every cell's :class:`RunSpec` is checked before
anything runs), expands the cells, keeps ``SWEEP_DIR/sweep.json`` (atomic writes) and drives an
executor (``memtui.engine.runs.executors``) over the cells that are not finished yet. It imports
neither torch nor the console. The file format is documented in ``docs/sweeps.md``.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memtui.engine.core.io import atomic_write_text, jsonable, utc_now
from memtui.engine.runs.executors.base import EXIT_INTERRUPTED
from memtui.engine.runs.spec import RunSpec, SpecError
from memtui.engine.runs.store import RunDir, RunLockedError

__all__ = ["SweepError", "Sweep", "Cell", "CellTask", "SweepBook", "load_sweep", "parse_sweep", "run_sweep",
           "read_sweep_json", "cell_finished", "checkpoint_label", "SWEEP_JSON", "SWEEP_LOCK", "SweepLock", "RunLockedError",
           "CELL_STATUSES"]

SWEEP_JSON = "sweep.json"
SWEEP_LOCK = "sweep.pid"
SPECS_DIR = ".specs"
LOGS_DIR = ".logs"
FORMAT = 1
CELL_STATUSES = ("pending", "running", "finished", "failed", "cancelled")
TOP_KEYS = ("name", "executor", "workers", "methods", "analyses", "spec", "base", "checkpoint", "concept", "cell")
BASE_KEYS = ("name", "path")
CHECKPOINT_KEYS = ("name", "path", "concept", "erasure", "base")
CONCEPT_KEYS = ("erased", "reference")
CELL_KEYS = ("base", "checkpoint", "method", "analysis", "spec")
AXIS_FIELDS = ("analysis", "base", "ablated", "erased", "reference", "method")  # set by the grid, not [spec]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SweepError(SpecError):
    """A sweep file that cannot be run; the message names every bad field (and its line when known)."""


@dataclass
class Cell:
    """One cell of the grid: its run directory's name, its spec and the axis values it came from."""

    name: str
    spec: RunSpec
    base: str
    checkpoint: str
    concept: str
    erasure: str | None
    method: str
    analysis: str

    def axes(self) -> dict[str, Any]:
        return {"base": self.base, "checkpoint": self.checkpoint, "concept": self.concept,
                "erasure": self.erasure, "method": self.method, "analysis": self.analysis}


@dataclass
class Sweep:
    """A parsed, validated sweep file."""

    name: str
    source: str
    grid: dict[str, Any]
    cells: list[Cell]
    executor: str = "local"
    workers: int | None = None
    #: each executor's table of the file ({"slurm": {"partition": "gpu", ...}})
    executor_options: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class CellTask:
    """What an executor runs for one cell: ``command`` (a ``memtui --batch`` run of the cell's spec
    into ``run_dir``), its log file, and the environment additions it needs."""

    name: str
    command: list[str]
    run_dir: Path
    log: Path
    #: the job an earlier sweep command submitted for this cell and recorded as pending/running
    #: (an executor may follow it instead of starting the cell again)
    previous_job: str | None = None


def checkpoint_label(erasure: Any, checkpoint: Any) -> str:
    """How reports and the console name a checkpoint's row of the grid: its erasure method, with
    the checkpoint's name when they differ (``esd (esd-church)``), else the one that is set."""
    return f"{erasure} ({checkpoint})" if erasure and checkpoint and erasure != checkpoint else str(erasure or checkpoint)


def cell_command(spec_file: Path, run_dir: Path) -> list[str]:
    """The command line a cell runs: the ordinary ``memtui --batch`` code path."""
    return [sys.executable, "-m", "memtui", "--batch", "--spec", str(spec_file), "--out", str(run_dir)]


# ---------------------------------------------------------------------------- parsing
def _line_of(text: str, key: str, table: str | None = None) -> int | None:
    """The 1-based line where ``key = ...`` is first written (inside ``[table]`` when given)."""
    pat = re.compile(rf'^\s*"?{re.escape(key)}"?\s*=')
    in_table = table is None
    for i, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if table is not None and stripped.startswith("["):
            in_table = stripped.strip("[] ") == table
            continue
        if in_table and pat.match(line):
            return i
    return None


def _at(text: str, key: str, table: str | None = None) -> str:
    line = _line_of(text, key, table)
    return f" (line {line})" if line else ""


def _resolve(value: Any, root: Path) -> Any:
    """A relative path made relative to the sweep file's folder when it exists there (a cached
    model id such as ``CompVis/stable-diffusion-v1-4`` stays as given)."""
    if not isinstance(value, str) or not value or os.path.isabs(os.path.expanduser(value)):
        return value
    p = root / value
    return str(p.resolve()) if p.exists() else value


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read and validate a sweep file; :class:`SweepError` lists every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"cannot read sweep file {str(p)!r}: {getattr(e, 'strerror', None) or e}") from e
    return parse_sweep(text, source=str(p.resolve()), root=p.resolve().parent)


def parse_sweep(text: str, source: str = "<sweep>", root: Path | None = None) -> Sweep:
    """Parse and validate sweep TOML ``text`` (relative paths are taken from ``root``)."""
    root = root or Path.cwd()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"cannot parse sweep file {source}: {e}") from e
    probs: list[str] = []

    def bad(msg: str) -> None:
        probs.append(msg)

    from memtui.engine.runs.executors import executor_names, get_executor

    exec_names = executor_names()
    for k in data:
        if k not in TOP_KEYS and k not in exec_names:
            bad(f"unknown key {k!r}{_at(text, k)}; known: {', '.join(TOP_KEYS + exec_names)}")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str):
        bad(f"name must be a string, got {name!r}{_at(text, 'name')}")
        name = "sweep"
    executor = data.get("executor", "local")
    if not isinstance(executor, str):
        bad(f"executor must be a string, got {executor!r}{_at(text, 'executor')}")
        executor = "local"
    workers = data.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        bad(f"workers must be a positive integer, got {workers!r}{_at(text, 'workers')}")
        workers = None
    elif executor not in exec_names:
        bad(f"executor must be one of {', '.join(exec_names)}, got {executor!r}{_at(text, 'executor')}")
    executor_options: dict[str, dict[str, Any]] = {}
    for ename in exec_names:  # each executor's own table, [local] / [slurm]
        if ename not in data:
            continue
        table = data[ename]
        if not isinstance(table, dict):
            bad(f"{ename} must be a table ([{ename}]) of the {ename} executor's options")
            continue
        for key, msg in get_executor(ename).option_problems(table):
            bad(msg + _at(text, key, ename))
        executor_options[ename] = dict(table)

    def str_list(key: str, default: list[str]) -> list[str]:
        v = data.get(key, default)
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            bad(f"{key} must be a non-empty list of names, got {v!r}{_at(text, key)}")
            return []
        if len(set(v)) != len(v):
            bad(f"{key} lists a name twice: {v!r}{_at(text, key)}")
        return list(dict.fromkeys(v))

    methods = str_list("methods", [RunSpec().method])
    analysis_names = str_list("analyses", [RunSpec().analysis])
    overrides = data.get("spec", {})
    if not isinstance(overrides, dict):
        bad("spec must be a table of RunSpec fields ([spec])")
        overrides = {}
    known = set(RunSpec.field_names())
    for k in overrides:
        if k not in known:
            bad(f"[spec] unknown field {k!r}{_at(text, k, 'spec')}; known: {', '.join(sorted(known))}")
        elif k in AXIS_FIELDS:
            bad(f"[spec] field {k!r}{_at(text, k, 'spec')} is set by the grid (use the "
                f"{'methods' if k == 'method' else 'analyses' if k == 'analysis' else 'base / checkpoint / concept'}"
                f" axis)")

    def entries(key: str, keys: tuple[str, ...], required: bool) -> list[dict[str, Any]]:
        v = data.get(key, [])
        if isinstance(v, dict):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            bad(f"{key} must be an array of tables ([[{key}]])")
            return []
        if required and not v:
            bad(f"the sweep needs at least one [[{key}]] entry")
        out = []
        for i, e in enumerate(v):
            where = f"[[{key}]] #{i + 1}"
            for k in e:
                if k not in keys:
                    bad(f"{where}: unknown key {k!r}{_at(text, k, key)}; known: {', '.join(keys)}")
            n = e.get("name")
            if not isinstance(n, str) or not _NAME.match(n):
                bad(f"{where}: name must be letters, digits, '.', '_' or '-' (a folder name), got {n!r}")
                continue
            out.append(e)
        names = [e["name"] for e in out]
        for n in sorted({n for n in names if names.count(n) > 1}):
            bad(f"[[{key}]]: name {n!r} is used twice")
        return out

    bases = entries("base", BASE_KEYS, required=True)
    for b in bases:
        if not isinstance(b.get("path"), str) or not b["path"]:
            bad(f"[[base]] {b['name']!r}: path must be a model folder or cached model id{_at(text, 'path', 'base')}")
    checkpoints = entries("checkpoint", CHECKPOINT_KEYS, required=True)
    concepts = data.get("concept", {})
    if not isinstance(concepts, dict) or not all(isinstance(v, dict) for v in concepts.values()):
        bad("concept must hold one table per concept ([concept.<name>] with erased and reference)")
        concepts = {}
    for cname, c in concepts.items():
        if not _NAME.match(cname):
            bad(f"[concept.{cname}]: a concept name must be letters, digits, '.', '_' or '-'")
        for k in c:
            if k not in CONCEPT_KEYS:
                bad(f"[concept.{cname}]: unknown key {k!r}{_at(text, k, f'concept.{cname}')}; "
                    f"known: {', '.join(CONCEPT_KEYS)}")
        for k in CONCEPT_KEYS:
            if k in c and not isinstance(c[k], str):
                bad(f"[concept.{cname}]: {k} must be a dataset folder path, got {c[k]!r}")
    base_names = [b["name"] for b in bases]
    for c in checkpoints:
        where = f"[[checkpoint]] {c['name']!r}"
        if not isinstance(c.get("concept"), str) or c["concept"] not in concepts:
            bad(f"{where}: concept must name a [concept.<name>] table ({', '.join(concepts) or 'none declared'}), "
                f"got {c.get('concept')!r}")
        for k in ("path", "erasure"):
            if k in c and not isinstance(c[k], str):
                bad(f"{where}: {k} must be a string, got {c[k]!r}")
        if "base" in c and c["base"] not in base_names:
            bad(f"{where}: base must name a [[base]] entry ({', '.join(base_names)}), got {c['base']!r}")

    # which combinations: the product, or the explicit [[cell]] list
    combos: list[tuple[dict[str, Any], dict[str, Any], str, str, dict[str, Any]]] = []
    ck_by = {c["name"]: c for c in checkpoints}
    b_by = {b["name"]: b for b in bases}
    explicit = data.get("cell")
    if explicit is not None:
        if not isinstance(explicit, list) or not all(isinstance(x, dict) for x in explicit) or not explicit:
            bad("cell must be a non-empty array of tables ([[cell]])")
            explicit = []
        for i, e in enumerate(explicit):
            where = f"[[cell]] #{i + 1}"
            for k in e:
                if k not in CELL_KEYS:
                    bad(f"{where}: unknown key {k!r}{_at(text, k, 'cell')}; known: {', '.join(CELL_KEYS)}")
            ck = ck_by.get(e.get("checkpoint"))
            if ck is None:
                bad(f"{where}: checkpoint must name a [[checkpoint]] entry ({', '.join(ck_by)}), "
                    f"got {e.get('checkpoint')!r}")
                continue
            bname = e.get("base", ck.get("base", base_names[0] if len(base_names) == 1 else None))
            if bname not in b_by:
                bad(f"{where}: base must name a [[base]] entry ({', '.join(base_names)}), got {bname!r}")
                continue
            method = e.get("method", methods[0] if len(methods) == 1 else None)
            analysis = e.get("analysis", analysis_names[0] if len(analysis_names) == 1 else None)
            if not isinstance(method, str) or not isinstance(analysis, str):
                bad(f"{where}: method and analysis must be given (the sweep lists more than one)")
                continue
            extra = e.get("spec", {})
            if not isinstance(extra, dict):
                bad(f"{where}: spec must be a table of RunSpec fields")
                extra = {}
            for k in extra:
                if k not in known or k in AXIS_FIELDS:
                    bad(f"{where}: spec field {k!r} is unknown or set by the grid")
            combos.append((b_by[bname], ck, method, analysis, extra))
    else:
        for b in bases:
            for ck in checkpoints:
                if ck.get("base", b["name"]) != b["name"]:
                    continue
                for method in methods:
                    for analysis in analysis_names:
                        combos.append((b, ck, method, analysis, {}))

    cells: list[Cell] = []
    overrides_ok = {k: v for k, v in overrides.items() if k in known and k not in AXIS_FIELDS}
    # every cell's spec is checked, also when other fields are bad (one report lists all)
    for b, ck, method, analysis, extra in combos:
        concept = ck.get("concept")
        if concept not in concepts or not isinstance(b.get("path"), str):
            continue
        extra = {k: v for k, v in extra.items() if k in known and k not in AXIS_FIELDS}
        parts = ([b["name"]] if len(bases) > 1 else []) + [ck["name"], concept, method, analysis]
        cname = "__".join(parts)
        c = concepts[concept]
        d = {**overrides_ok, **extra, "analysis": analysis, "method": method,
             "base": _resolve(b["path"], root), "ablated": _resolve(ck.get("path"), root) or None,
             "erased": _resolve(c.get("erased"), root), "reference": _resolve(c.get("reference"), root)}
        try:
            spec = RunSpec.from_dict(d, validate=False)
            spec_probs = spec.problems()
        except (SpecError, TypeError) as e:
            bad(f"cell {cname}: {e}")
            continue
        for pr in spec_probs:
            key = pr.split(" ", 1)[0]
            line = _at(text, key, "spec") if key in overrides else ""
            bad(f"cell {cname}: {pr}{line}")
        if not spec_probs:
            cells.append(Cell(cname, spec.resolved_paths(), b["name"], ck["name"], concept,
                              ck.get("erasure"), method, analysis))
    names = [c.name for c in cells]
    for n in sorted({n for n in names if names.count(n) > 1}):
        bad(f"cell {n} is listed twice")
    if probs:
        uniq = list(dict.fromkeys(probs))
        raise SweepError(f"invalid sweep file {source}:\n" + "\n".join(f"  - {p}" for p in uniq))
    grid = {"bases": {b["name"]: _resolve(b["path"], root) for b in bases},
            "checkpoints": {c["name"]: {"path": _resolve(c.get("path"), root), "concept": c["concept"],
                                        "erasure": c.get("erasure"), "base": c.get("base")} for c in checkpoints},
            "concepts": {k: {kk: _resolve(vv, root) for kk, vv in v.items()} for k, v in concepts.items()},
            "methods": methods, "analyses": analysis_names, "spec": overrides,
            "combinations": "cells" if explicit is not None else "product"}
    return Sweep(name, source, grid, cells, executor, workers, executor_options)


# ---------------------------------------------------------------------------- state
def cell_finished(run_dir: str | os.PathLike[str]) -> bool:
    """Whether a cell's run directory holds a finished, complete summary (and no live writer)."""
    rd = RunDir(run_dir)
    summary = rd.read_summary()
    return bool(summary) and summary.get("status") == "finished" and summary.get("complete") is True \
        and rd.live_lock() is None


def read_sweep_json(sweep_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``SWEEP_DIR/sweep.json``; FileNotFoundError / ValueError naming the file."""
    p = Path(sweep_dir) / SWEEP_JSON
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{sweep_dir} is not a sweep directory (no {SWEEP_JSON})") from None
    except ValueError as e:
        raise ValueError(f"{p} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError(f"{p} holds no cell list")
    return data


class SweepBook:
    """``sweep.json``: the grid, the cells and the executor, rewritten atomically on every change
    (one writer: the sweep command's process; the cells' own run directories are the truth)."""

    def __init__(self, sweep: Sweep, out: Path, executor: str) -> None:
        self.path = out / SWEEP_JSON
        self._mutex = threading.Lock()
        self.data: dict[str, Any] = {
            "format": FORMAT, "name": sweep.name, "source": sweep.source, "started": utc_now(),
            "updated": utc_now(), "grid": sweep.grid,
            "executor": {"name": executor, "pid": os.getpid(), "workers": []},
            "cells": [{"name": c.name, **c.axes(), "spec": c.spec.to_dict(), "status": "pending",
                       "error": None, "exit_code": None, "worker": None, "pid": None, "job_id": None}
                      for c in sweep.cells]}
        self._by = {c["name"]: c for c in self.data["cells"]}

    def cell(self, name: str, **fields: Any) -> None:
        with self._mutex:
            self._by[name].update(fields)
            self._write()

    def workers(self, workers: list[dict[str, Any]]) -> None:
        with self._mutex:
            self.data["executor"]["workers"] = workers
            self._write()

    def finish(self, **fields: Any) -> None:
        with self._mutex:
            self.data.update(fields)
            self._write()

    def _write(self) -> None:
        self.data["updated"] = utc_now()
        atomic_write_text(self.path, json.dumps(jsonable(self.data), indent=2) + "\n")


# ---------------------------------------------------------------------------- running
class SweepLock(RunDir):
    """The sweep command's lock, ``SWEEP_DIR/sweep.pid``: the run directory's lock (atomic
    creation, stale-lock take-over, see docs/run-format.md) under its own file name, so that one
    sweep command at a time drives a sweep directory (sweep.json has one writer)."""

    LOCK = SWEEP_LOCK

    def _locked_message(self, lock: Mapping[str, Any]) -> str:
        return (f"sweep {self.path} is being run by process {lock.get('pid')} on {lock.get('host')} "
                f"(since {lock.get('started')}); wait for it or stop it first")



@dataclass
class SweepResult:
    statuses: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)


def _previous_jobs(out: Path, executor: str) -> dict[str, str]:
    """Cell -> job id that the last sweep command on ``out`` (same executor) recorded for a cell
    still pending or running when it stopped (e.g. killed with its tasks left on the cluster)."""
    try:
        data = read_sweep_json(out)
    except (OSError, ValueError):
        return {}
    if (data.get("executor") or {}).get("name") != executor:
        return {}
    return {str(c["name"]): str(c["job_id"]) for c in data["cells"]
            if c.get("job_id") and c.get("status") in ("pending", "running")}


def _last_error_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        if ln.startswith("memtui: ") and "items (" not in ln:
            return ln[len("memtui: "):]
    return lines[-1] if lines else ""


def run_sweep(sweep: Sweep, out: str | os.PathLike[str], executor: str | None = None, workers: int | None = None,
              cancel: threading.Event | None = None, say: Callable[[str], None] | None = None) -> SweepResult:
    """Run every cell of ``sweep`` not finished yet into ``out/<cell>/`` with the named executor;
    finished cells are skipped, interrupted ones resumed (by the run layer). Returns each cell's
    status. ``cancel`` set: the executor stops its workers (cells stay resumable)."""
    from memtui.engine.runs.executors import get_executor

    say = say or (lambda msg: None)
    cancel = cancel or threading.Event()
    out = Path(out)
    name = executor or sweep.executor
    ex = get_executor(name)(workers=workers if workers is not None else sweep.workers,
                            options=sweep.executor_options.get(name))
    out.mkdir(parents=True, exist_ok=True)
    lock = SweepLock(out)
    lock.acquire_lock()  # RunLockedError: another sweep command drives this folder
    try:
        return _run_locked(sweep, out, name, ex, cancel, say)
    finally:
        lock.release_lock()


def _run_locked(sweep: Sweep, out: Path, name: str, ex: Any, cancel: threading.Event,
                say: Callable[[str], None]) -> SweepResult:
    (out / SPECS_DIR).mkdir(exist_ok=True)
    (out / LOGS_DIR).mkdir(exist_ok=True)
    previous = _previous_jobs(out, name)
    book = SweepBook(sweep, out, name)
    result = SweepResult()
    tasks: list[CellTask] = []
    for c in sweep.cells:
        run_dir = out / c.name
        if cell_finished(run_dir):
            result.statuses[c.name] = "finished"
            book.cell(c.name, status="finished")
            continue
        spec_file = out / SPECS_DIR / f"{c.name}.json"
        atomic_write_text(spec_file, c.spec.to_json() + "\n")
        tasks.append(CellTask(c.name, cell_command(spec_file, run_dir), run_dir, out / LOGS_DIR / f"{c.name}.log",
                              previous.get(c.name)))
    say(f"sweep {sweep.name}: {len(sweep.cells)} cell(s), {len(sweep.cells) - len(tasks)} finished, "
        f"{len(tasks)} to run with the {name} executor")
    book.workers(ex.describe())

    def on_queued(task: CellTask, job: Mapping[str, Any]) -> None:
        book.cell(task.name, status="pending", job_id=job.get("job_id"), error=None, exit_code=None)
        say(f"cell {task.name}: " + (f"following job {job.get('job_id')} (submitted by an earlier sweep command)"
                                     if job.get("followed") else f"queued (job {job.get('job_id')})"))

    def on_start(task: CellTask, worker: Mapping[str, Any], pid: int | None) -> None:
        fields = {"job_id": worker["job_id"]} if worker.get("job_id") else {}
        book.cell(task.name, status="running", worker=worker.get("id"), pid=pid, error=None, exit_code=None, **fields)
        where = f"job {worker['job_id']} on {worker.get('host') or '?'}" if worker.get("job_id") else \
            f"worker {worker.get('id')}, pid {pid}"
        say(f"cell {task.name}: started ({where})")

    def on_end(task: CellTask, code: int | None) -> None:
        if code == 0 and cell_finished(task.run_dir):
            status, error = "finished", None
        elif code == EXIT_INTERRUPTED or (cancel.is_set() and code is not None and code < 0):
            status, error = "cancelled", "interrupted; rerun the sweep to resume"
        else:
            status = "failed"
            error = _last_error_line(task.log) if code is not None and code > 0 else f"worker killed (signal {-(code or 0)})"
            if code == 0:
                error = "the run ended without a complete summary"
        result.statuses[task.name] = status
        book.cell(task.name, status=status, error=error, exit_code=code, pid=None)
        say(f"cell {task.name}: {status}" + (f" ({error})" if error else ""))

    ex.run(tasks, on_start, on_end, cancel, on_queued=on_queued)
    for t in tasks:
        if t.name not in result.statuses:  # never started (cancelled before its turn)
            result.statuses[t.name] = "pending"
    result.cancelled = cancel.is_set()
    book.finish(ended=utc_now(), cancelled=result.cancelled)
    book.workers([])
    return result
