"""A run directory: the public, resumable on-disk form of one analysis run (``docs/run-format.md``).

Layout::

    spec.json        the spec (atomic write)
    events.jsonl     append-only log: {"ts": ISO-8601 UTC, "type": ..., ...}
    results.jsonl    one JSON record per item (append + flush + fsync); latest record per id wins
    latents/<id>.safetensors, images/<id>.query.png, images/<id>.recon.png  (written before the record)
    summary.json     the analysis summary (atomic write)
    run.pid          lock of the live process: {"pid", "host", "started", "proc_start"}

Durability: whole files are written to a temp file in the same folder, fsynced and renamed; JSONL
lines are appended in one write and fsynced. A torn last line (``kill -9`` mid-write) is ignored by
readers and cut off when the run is resumed. Non-finite floats are written as ``null``.
This module imports torch only to write latents.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memtui.engine.runs.spec import RunSpec, SpecMismatchError

EVENT_TYPES = ("started", "resumed", "progress", "item_done", "item_error", "finished", "cancelled", "failed")
TERMINAL = {"finished", "cancelled", "failed"}
KEEP_ON_RESTART = ("console.pid", "console.log")
STATUSES = ("new", "running", "finished", "failed", "cancelled", "incomplete")

__all__ = ["RunDir", "RunLockedError", "SpecMismatchError", "utc_now", "jsonable", "atomic_write_text"]


class RunLockedError(RuntimeError):
    """Another live process is running this run directory."""


def utc_now() -> str:
    """ISO-8601 UTC timestamp with milliseconds, e.g. ``2026-11-28T13:05:01.123Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def jsonable(x: Any) -> Any:
    """Deep copy of ``x`` that strict JSON accepts: non-finite floats -> None, numpy scalars and
    arrays -> Python numbers/lists, Paths -> str, tuples -> lists."""
    if isinstance(x, bool) or x is None or isinstance(x, (str, int)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):  # numpy scalar/array, torch tensor
        return jsonable(x.tolist())
    if hasattr(x, "item"):
        return jsonable(x.item())
    return str(x)


def dumps_line(obj: Any) -> str:
    return json.dumps(jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and rename."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return dest


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The complete JSON-object lines of a JSONL file ([] when missing). A last line without its
    newline (torn write) and lines that do not parse are skipped."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return parse_jsonl(data[: data.rfind(b"\n") + 1])


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects of complete JSONL lines ``data``; lines that do not parse are skipped."""
    out: list[dict[str, Any]] = []
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _truncate_torn_tail(path: Path) -> int:
    """Cut a JSONL file after its last newline; returns the number of bytes removed."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        pos, keep, chunk = size, 0, 65536
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            i = buf.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, proc_start: int | None = None) -> bool:
    """Whether process ``pid`` exists (``os.kill(pid, 0)``) and, when ``proc_start`` is known on
    Linux, is the same process (not a later one that reused the pid)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    if proc_start is not None:
        now = _proc_start_ticks(pid)
        if now is not None and now != proc_start:
            return False
    return True


class RunDir:
    """One run directory (see module docstring). Methods are safe to call from a reader process
    while a writer process runs."""

    SPEC, EVENTS, RESULTS, SUMMARY, LOCK = "spec.json", "events.jsonl", "results.jsonl", "summary.json", "run.pid"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._owns_lock = False

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ------------------------------------------------------------------ paths
    @property
    def latents_dir(self) -> Path:
        return self.path / "latents"

    @property
    def images_dir(self) -> Path:
        return self.path / "images"

    def latent_path(self, item_id: str) -> Path:
        return self.latents_dir / f"{item_id}.safetensors"

    def image_path(self, item_id: str, kind: str) -> Path:
        """``images/<item_id>.<kind>.png`` (kind: query | recon | ...)."""
        return self.images_dir / f"{item_id}.{kind}.png"

    def exists(self) -> bool:
        """Whether this is a run directory (it holds spec.json)."""
        return (self.path / self.SPEC).is_file()

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, path: str | os.PathLike[str], spec: RunSpec) -> "RunDir":
        """A new run directory holding ``spec``; FileExistsError if one is already there."""
        rd = cls(path)
        if rd.exists():
            raise FileExistsError(f"{rd.path} is already a run directory")
        rd.path.mkdir(parents=True, exist_ok=True)
        rd.write_spec(spec)
        return rd

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "RunDir":
        """An existing run directory; FileNotFoundError if ``path`` holds no spec.json."""
        rd = cls(path)
        if not rd.exists():
            raise FileNotFoundError(f"{rd.path} is not a run directory (no {cls.SPEC})")
        return rd

    def prepare(self, spec: RunSpec, restart: bool = False) -> str:
        """Make this directory ready to run ``spec``: ``"new"`` (created), ``"resume"`` (stored spec
        matches; a torn JSONL tail is cut) or ``"restart"`` (old contents moved to
        ``.old-<UTC timestamp>/``). Raises :class:`SpecMismatchError` naming every differing field,
        or :class:`RunLockedError` if a live process holds the run."""
        if not self.exists():
            self.path.mkdir(parents=True, exist_ok=True)
            self.write_spec(spec)
            return "new"
        self._check_not_live()
        if restart:
            self.archive()
            self.write_spec(spec)
            return "restart"
        stored = self.read_spec()
        diffs = stored.differences(spec)
        if diffs:
            raise SpecMismatchError(self.path, diffs)
        self.write_spec(spec)  # non-result fields (batch size, device) may change on resume
        for name in (self.EVENTS, self.RESULTS):
            _truncate_torn_tail(self.path / name)
        return "resume"

    def archive(self) -> Path | None:
        """Move everything but earlier archives and the console's own files (``console.pid``,
        ``console.log``: the launching console may hold them open) into ``.old-<UTC timestamp>/``;
        returns that folder (None when there was nothing to move)."""
        entries = [p for p in self.path.iterdir() if not p.name.startswith(".old-") and p.name not in KEEP_ON_RESTART]
        if not entries:
            return None
        dest = self.path / (".old-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ"))
        dest.mkdir()
        for p in entries:
            shutil.move(str(p), str(dest / p.name))
        return dest

    # ------------------------------------------------------------------ spec / summary
    def write_spec(self, spec: RunSpec) -> None:
        atomic_write_text(self.path / self.SPEC, json.dumps(jsonable(spec.to_dict()), indent=2) + "\n")

    def read_spec_dict(self) -> dict[str, Any]:
        return json.loads((self.path / self.SPEC).read_text(encoding="utf-8"))

    def read_spec(self) -> RunSpec:
        return RunSpec.from_dict(self.read_spec_dict(), validate=False)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_text(self.path / self.SUMMARY,
                          json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / self.SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ append-only logs
    def _append(self, name: str, obj: Mapping[str, Any]) -> None:
        line = (dumps_line(obj) + "\n").encode("utf-8")
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def event(self, type: str, **fields: Any) -> dict[str, Any]:
        """Append ``{"ts": now, "type": type, **fields}`` to events.jsonl; returns it."""
        if type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {', '.join(EVENT_TYPES)}, got {type!r}")
        ev = {"ts": utc_now(), "type": type, **fields}
        self._append(self.EVENTS, ev)
        return ev

    def append_result(self, record: Mapping[str, Any]) -> None:
        """Append one item record (must hold ``item_id``); write its files first."""
        if "item_id" not in record:
            raise ValueError("a result record needs an item_id")
        self._append(self.RESULTS, record)

    def read_events(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / self.EVENTS)

    def read_results(self) -> dict[str, dict[str, Any]]:
        """item_id -> its latest record, in order of first appearance."""
        out: dict[str, dict[str, Any]] = {}
        for rec in read_jsonl(self.path / self.RESULTS):
            iid = rec.get("item_id")
            if isinstance(iid, str):
                out[iid] = rec
        return out

    def done_ids(self, statuses: Iterable[str] = ("ok",)) -> set[str]:
        """Ids whose latest record has one of ``statuses`` (default: finished successfully; items
        in error are retried on resume)."""
        wanted = set(statuses)
        return {i for i, r in self.read_results().items() if r.get("status") in wanted}

    # ------------------------------------------------------------------ item files
    def write_latents(self, item_id: str, tensors: Mapping[str, Any]) -> Path:
        """``latents/<item_id>.safetensors`` with the given tensors (CPU float copies), atomically."""
        import torch
        from safetensors.torch import save

        data = {k: torch.as_tensor(v).detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        return atomic_write_bytes(self.latent_path(item_id), save(data))

    def read_latents(self, item_id: str) -> dict[str, Any]:
        from safetensors.torch import load_file

        return load_file(str(self.latent_path(item_id)))

    def write_image(self, item_id: str, kind: str, image: Any) -> Path:
        """``images/<item_id>.<kind>.png`` atomically (uint8 [H, W, 3], PIL image or tensor)."""
        from memtui.engine.data.images import save_png

        return save_png(image, self.image_path(item_id, kind))

    # ------------------------------------------------------------------ lock
    def read_lock(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.path / self.LOCK).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def live_lock(self) -> dict[str, Any] | None:
        """The lock if its process is alive on this host, else None. A lock written on another
        host counts as stale (its process cannot be checked from here; see docs/run-format.md)."""
        lock = self.read_lock()
        if not lock or lock.get("host") != socket.gethostname():
            return None
        pid = lock.get("pid")
        return lock if isinstance(pid, int) and pid_alive(pid, lock.get("proc_start")) else None

    def _check_not_live(self) -> None:
        lock = self.live_lock()
        if lock and lock.get("pid") != os.getpid():
            raise RunLockedError(f"{self.path} is being run by process {lock.get('pid')} on "
                                 f"{lock.get('host')} (since {lock.get('started')}); "
                                 "wait for it or cancel it first")

    def acquire_lock(self) -> None:
        """Write run.pid for this process; :class:`RunLockedError` if another live one holds it."""
        self._check_not_live()
        atomic_write_text(self.path / self.LOCK, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "started": utc_now(),
            "proc_start": _proc_start_ticks(os.getpid())}) + "\n")
        self._owns_lock = True

    def release_lock(self) -> None:
        if self._owns_lock:
            lock = self.read_lock()
            if lock and lock.get("pid") == os.getpid():
                try:
                    (self.path / self.LOCK).unlink()
                except FileNotFoundError:
                    pass
            self._owns_lock = False

    # ------------------------------------------------------------------ state
    def status(self) -> str:
        """``running`` (a live process holds the lock), else from the last start/terminal event:
        ``finished`` | ``cancelled`` | ``failed`` | ``incomplete`` (started, process gone), or
        ``new`` (no events yet)."""
        if self.live_lock() is not None:
            return "running"
        state = "new"
        for ev in self.read_events():
            t = ev.get("type")
            if t in ("started", "resumed"):
                state = "incomplete"
            elif t in TERMINAL:
                state = t
        return state

    def progress(self) -> tuple[int, int | None]:
        """(items with a record of any status, total from the latest event that states it)."""
        total = None
        for ev in self.read_events():
            if isinstance(ev.get("total"), int):
                total = ev["total"]
        return len(self.read_results()), total

