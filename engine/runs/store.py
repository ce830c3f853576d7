"""A run directory: the public, resumable on-disk form of one analysis run (``docs/run-format.md``).

Layout::

    spec.json        the spec (atomic write)
    events.jsonl     append-only log: {"ts": ISO-8601 UTC, "type": ..., ...}
    results.jsonl    one JSON record per item (append + flush + fsync); latest record per id wins
    latents/<id>.safetensors, images/<id>.query.png, images/<id>.recon.png  (written before the record)
    summary.json     the analysis summary (atomic write)
    run.pid          lock of the live process: {"pid", "host", "started", "proc_start"}

Durability (``core.io``): whole files are written to a temp file in the same folder, fsynced and
renamed; JSONL lines are appended in one write and fsynced. A torn last line (``kill -9`` mid-write)
is ignored by readers and cut off when the run is resumed. Non-finite floats are written as ``null``.
This module imports torch only to write latents.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memtui.engine.core.io import (append_jsonl, atomic_write_bytes, atomic_write_text, jsonable, parse_jsonl,
                                   read_jsonl, truncate_torn_tail, utc_now)
from memtui.engine.runs.spec import RunSpec, SpecMismatchError

EVENT_TYPES = ("started", "resumed", "progress", "item_done", "item_error", "finished", "cancelled", "failed")
TERMINAL = {"finished", "cancelled", "failed"}
KEEP_ON_RESTART = ("console.pid", "console.log")
STATUSES = ("new", "running", "finished", "failed", "cancelled", "incomplete")

# utc_now, jsonable, atomic_write_text, read_jsonl and parse_jsonl are re-exported from core.io
__all__ = ["RunDir", "RunLockedError", "SpecMismatchError", "pid_alive", "utc_now", "jsonable",
           "atomic_write_text", "read_jsonl", "parse_jsonl"]


class RunLockedError(RuntimeError):
    """Another live process is running this run directory."""


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
            truncate_torn_tail(self.path / name)
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
    def event(self, type: str, **fields: Any) -> dict[str, Any]:
        """Append ``{"ts": now, "type": type, **fields}`` to events.jsonl; returns it."""
        if type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {', '.join(EVENT_TYPES)}, got {type!r}")
        ev = {"ts": utc_now(), "type": type, **fields}
        append_jsonl(self.path / self.EVENTS, ev)
        return ev

    def append_result(self, record: Mapping[str, Any]) -> None:
        """Append one item record (must hold ``item_id``); write its files first."""
        if "item_id" not in record:
            raise ValueError("a result record needs an item_id")
        append_jsonl(self.path / self.RESULTS, record)

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

