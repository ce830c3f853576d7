"""A run directory: the public, resumable on-disk form of one analysis run (``docs/run-format.md``).

Layout::

    spec.json        the spec (atomic write)
    events.jsonl     append-only log: {"ts": ISO-8601 UTC, "type": ..., ...}
    results.jsonl    one JSON record per item (append + flush + fsync); latest record per id wins
    latents/<id>.safetensors, images/<id>.query.png, images/<id>.recon.png  (written before the record)
    summary.json     the analysis summary (atomic write)
    run.pid          lock of the live process: {"pid", "host", "started", "proc_start"}, created
                     atomically (O_EXCL-style hard link) under a short flock of the directory
    shards/shard-<i>-of-<K>/   one writer of a sharded session (``--shards K``): its own
                     results.jsonl, events.jsonl, run.pid and shard.log; item files go to the run's
                     latents/ and images/. Folded into the run's results.jsonl when the session ends
                     (or when the run is next prepared, after a crash).

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
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from memtui.engine.core.io import (append_jsonl, atomic_write_bytes, atomic_write_text, jsonable, parse_jsonl,
                                   read_json_object, read_jsonl, truncate_torn_tail, utc_now)
from memtui.engine.runs.identity import identity_changes, model_identities
from memtui.engine.runs.spec import ModelChangedError, RunSpec, SpecMismatchError

EVENT_TYPES = ("started", "resumed", "progress", "item_done", "item_error", "finished", "cancelled", "failed")
TERMINAL = {"finished", "cancelled", "failed"}
KEEP_ON_RESTART = ("console.pid", "console.log")
STATUSES = ("new", "running", "finished", "failed", "cancelled", "incomplete")

# utc_now, jsonable, atomic_write_text, read_jsonl and parse_jsonl are re-exported from core.io
__all__ = ["RunDir", "RunLockedError", "SpecMismatchError", "pid_alive", "utc_now", "jsonable",
           "atomic_write_text", "read_jsonl", "parse_jsonl"]


class RunLockedError(RuntimeError):
    """Another live process is running this run directory."""


def _proc_stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux), else None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), else None."""
    fields = _proc_stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


def pid_alive(pid: int, proc_start: int | None = None) -> bool:
    """Whether process ``pid`` exists (``os.kill(pid, 0)``) and is not a zombie or dead (Linux:
    state ``Z``/``X`` in ``/proc/<pid>/stat``; a zombie has exited and holds no run), and, when
    ``proc_start`` is known on Linux, is the same process (not a later one that reused the pid)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    fields = _proc_stat_fields(pid)
    if fields:
        if fields[0] in ("Z", "X", "x"):
            return False
        if proc_start is not None:
            try:
                if int(fields[19]) != proc_start:
                    return False
            except (ValueError, IndexError):
                pass
    return True


@contextmanager
def _dir_mutex(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the directory ``path`` for a short critical section (check the
    lock, take it over, archive); a no-op where flock is unavailable (the lock file's atomic
    creation still holds). Not reentrant."""
    try:
        import fcntl
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the flock


class RunDir:
    """One run directory (see module docstring). Methods are safe to call from a reader process
    while a writer process runs."""

    SPEC, EVENTS, RESULTS, SUMMARY, LOCK = "spec.json", "events.jsonl", "results.jsonl", "summary.json", "run.pid"
    SHARDS, SHARD_LOG = "shards", "shard.log"
    FRESH_LOCK_S = 5.0  # an unparsable run.pid younger than this is being written, not stale

    def __init__(self, path: str | os.PathLike[str], shard: tuple[int, int] | None = None) -> None:
        """``shard = (i, K)``: the writer of shard ``i`` of ``K`` (0-based): it appends to, locks and
        logs in ``shards/shard-<i>-of-<K>/``; every reader method still sees the whole run."""
        self.path = Path(path)
        if shard is not None and not (isinstance(shard[0], int) and isinstance(shard[1], int)
                                      and 0 <= shard[0] < shard[1]):
            raise ValueError(f"shard must be (i, K) with 0 <= i < K, got {shard!r}")
        self.shard = shard
        self._owns_lock = False

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r}" + (f", shard={self.shard!r})" if self.shard else ")")

    # ------------------------------------------------------------------ paths
    def shard_dir(self, i: int, k: int) -> Path:
        """``shards/shard-<i>-of-<k>/``: the files of one writer of a ``k``-way sharded session."""
        return self.path / self.SHARDS / f"shard-{i}-of-{k}"

    @property
    def own_dir(self) -> Path:
        """Where this writer's results.jsonl, events.jsonl and run.pid are: the run directory, or
        its shard's folder."""
        return self.shard_dir(*self.shard) if self.shard else self.path

    def shard_dirs(self) -> list[Path]:
        """The shard folders present (any ``K``), ordered by (K, i)."""
        found = []
        for d in (self.path / self.SHARDS).glob("shard-*-of-*") if (self.path / self.SHARDS).is_dir() else ():
            parts = d.name.split("-")
            if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit() and d.is_dir():
                found.append((int(parts[3]), int(parts[1]), d))
        return [d for _, _, d in sorted(found)]

    def result_files(self) -> list[Path]:
        """Every results file of the run, in reading order: ``results.jsonl``, then the shards'
        (records in a shard's file are newer than the run file's: a shard retries what the run
        file holds in error; the shard files are folded into the run file when the session ends)."""
        return [self.path / self.RESULTS] + [d / self.RESULTS for d in self.shard_dirs()
                                             if (d / self.RESULTS).exists()]

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
        ``.old-<UTC timestamp>/``). Raises :class:`SpecMismatchError` naming every differing field
        (:class:`ModelChangedError` when the model files at the same paths are not the ones the run
        started with), or :class:`RunLockedError` if a live process holds the run."""
        self.path.mkdir(parents=True, exist_ok=True)
        with _dir_mutex(self.path):  # no other process takes the lock while this checks and changes
            if not self.exists():
                self._check_not_live()
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
            self._check_models(spec)
            self.write_spec(spec)  # non-result fields (batch size, device) may change on resume
            for name in (self.EVENTS, self.RESULTS):
                truncate_torn_tail(self.path / name)
            self.fold_shards()
            return "resume"

    def _check_models(self, spec: RunSpec) -> None:
        """:class:`ModelChangedError` when the ``started`` event recorded other model identities
        than the files at ``spec``'s paths have now (runs that recorded none are not checked)."""
        stored = next((e.get("models") for e in self.read_events() if e.get("type") == "started"), None)
        if isinstance(stored, dict):
            changes = identity_changes(stored, model_identities(spec))
            if changes:
                raise ModelChangedError(self.path, changes)

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
        atomic_write_text(self.path / self.SPEC, json.dumps(jsonable({**spec.to_dict(), **spec.derived()}), indent=2)
                          + "\n")

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
        """Append ``{"ts": now, "type": type, **fields}`` to this writer's events.jsonl; returns it."""
        if type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {', '.join(EVENT_TYPES)}, got {type!r}")
        ev = {"ts": utc_now(), "type": type, **fields}
        self.own_dir.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.own_dir / self.EVENTS, ev)
        return ev

    def append_result(self, record: Mapping[str, Any]) -> None:
        """Append one item record (must hold ``item_id``) to this writer's results.jsonl; write its
        files first."""
        if "item_id" not in record:
            raise ValueError("a result record needs an item_id")
        self.own_dir.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.own_dir / self.RESULTS, record)

    def read_events(self) -> list[dict[str, Any]]:
        """This writer's events (the run's events.jsonl, or its shard's)."""
        return read_jsonl(self.own_dir / self.EVENTS)

    def read_all_events(self) -> list[dict[str, Any]]:
        """The run's events, then each shard's (shard events carry no ``shard`` field of their own:
        they are in their shard's file)."""
        return read_jsonl(self.path / self.EVENTS) + [ev for d in self.shard_dirs()
                                                       for ev in read_jsonl(d / self.EVENTS)]

    def read_results(self) -> dict[str, dict[str, Any]]:
        """item_id -> its latest record over every results file (:meth:`result_files`), in order of
        first appearance."""
        out: dict[str, dict[str, Any]] = {}
        for path in self.result_files():
            for rec in read_jsonl(path):
                iid = rec.get("item_id")
                if isinstance(iid, str):
                    out[iid] = rec
        return out

    def fold_shards(self) -> int:
        """Append every shard's complete records to the run's results.jsonl and remove the shard's
        results file (its events and log stay). Call only while no shard writer is live. Safe to
        repeat after a crash: a record folded twice is the same record. Returns records folded."""
        n = 0
        for d in self.shard_dirs():
            path = d / self.RESULTS
            if not path.exists():
                continue
            records = read_jsonl(path)
            for rec in records:
                append_jsonl(self.path / self.RESULTS, rec)
            n += len(records)
            path.unlink()
            lock = d / self.LOCK
            if lock.exists() and not self._live(read_json_object(lock)):
                lock.unlink(missing_ok=True)
        return n

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
        return read_json_object(self.own_dir / self.LOCK)

    def live_lock(self) -> dict[str, Any] | None:
        """The lock if its process is alive on this host, else None. A lock written on another
        host counts as stale (its process cannot be checked from here; see docs/run-format.md)."""
        lock = self.read_lock()
        return lock if self._live(lock) else None

    @staticmethod
    def _live(lock: Mapping[str, Any] | None) -> bool:
        if not lock or lock.get("host") != socket.gethostname():
            return False
        pid = lock.get("pid")
        return isinstance(pid, int) and pid_alive(pid, lock.get("proc_start"))

    def live_shard_locks(self) -> list[dict[str, Any]]:
        """The locks of shard writers whose processes are alive on this host."""
        out = []
        for d in self.shard_dirs():
            lock = read_json_object(d / self.LOCK)
            if self._live(lock):
                out.append(lock)
        return out

    def _check_not_live(self) -> None:
        lock = self.live_lock()
        if lock and lock.get("pid") != os.getpid():
            raise RunLockedError(self._locked_message(lock))
        shard = next(iter(self.live_shard_locks()), None) if self.shard is None else None
        if shard is not None:
            raise RunLockedError(self._locked_message(shard) + " (a shard of a sharded session)")
        if lock is None and self._lock_being_written():
            raise RunLockedError(f"{self.path} is being started by another process; wait for it or cancel it first")

    def _locked_message(self, lock: Mapping[str, Any]) -> str:
        return (f"{self.path} is being run by process {lock.get('pid')} on {lock.get('host')} "
                f"(since {lock.get('started')}); wait for it or cancel it first")

    def _lock_being_written(self) -> bool:
        """Whether run.pid exists but does not parse yet and is younger than a few seconds (a
        process that created it with O_EXCL is still writing it)."""
        try:
            age = time.time() - (self.own_dir / self.LOCK).stat().st_mtime
        except OSError:
            return False
        return self.read_lock() is None and age < self.FRESH_LOCK_S

    def _create_lock(self, data: bytes) -> bool:
        """Create run.pid holding ``data`` atomically, only if it does not exist (a complete temp
        file hard-linked into place; ``O_CREAT|O_EXCL`` where links are not supported). True if
        created, False if run.pid already exists."""
        dest = self.own_dir / self.LOCK
        tmp = self.own_dir / f".{self.LOCK}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, dest)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system
            try:
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _take_over_stale(self, seen: bytes) -> None:
        """Remove a stale run.pid whose bytes were ``seen``: rename it away atomically, and if the
        file renamed is not the one judged stale (another process replaced it meanwhile), put it
        back."""
        dest = self.own_dir / self.LOCK
        aside = self.own_dir / f".{self.LOCK}.stale.{os.getpid()}.{uuid.uuid4().hex}"
        try:
            os.rename(dest, aside)
        except FileNotFoundError:
            return
        try:
            if aside.read_bytes() != seen:
                try:
                    os.link(aside, dest)
                except OSError:
                    pass
        finally:
            try:
                aside.unlink()
            except OSError:
                pass

    def acquire_lock(self) -> None:
        """Take run.pid for this process, atomically (see :meth:`_create_lock`); a stale lock (dead,
        zombie or recycled pid, another host) is taken over. :class:`RunLockedError` if another
        live process holds it."""
        self.own_dir.mkdir(parents=True, exist_ok=True)
        data = (json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now(),
                            "proc_start": _proc_start_ticks(os.getpid())}) + "\n").encode("utf-8")
        with _dir_mutex(self.own_dir):
            for _ in range(20):
                if self._create_lock(data):
                    self._owns_lock = True
                    return
                try:
                    seen = (self.own_dir / self.LOCK).read_bytes()
                except FileNotFoundError:
                    continue
                except OSError as e:
                    raise RunLockedError(f"{self.path}: cannot read {self.LOCK}: {e}") from e
                lock = self.live_lock()
                if lock is not None and lock.get("pid") == os.getpid():
                    atomic_write_bytes(self.own_dir / self.LOCK, data)  # already ours: refresh it
                    self._owns_lock = True
                    return
                if lock is not None:
                    raise RunLockedError(self._locked_message(lock))
                if self._lock_being_written():
                    time.sleep(0.05)
                    continue
                self._take_over_stale(seen)
            if self._lock_being_written():
                raise RunLockedError(f"{self.path} is being started by another process; "
                                     "wait for it or cancel it first")
            raise RunLockedError(f"{self.path}: could not take {self.LOCK} (other processes keep taking it)")

    def release_lock(self) -> None:
        """Remove run.pid if this process holds it."""
        if self._owns_lock:
            lock = self.read_lock()
            if lock and lock.get("pid") == os.getpid():
                try:
                    (self.own_dir / self.LOCK).unlink()
                except FileNotFoundError:
                    pass
            self._owns_lock = False

    # ------------------------------------------------------------------ state
    def status(self) -> str:
        """``running`` (a live process holds the lock), else from the last start/terminal event:
        ``finished`` | ``cancelled`` | ``failed`` | ``incomplete`` (started, process gone), or
        ``new`` (no events yet)."""
        if self.live_lock() is not None or (self.shard is None and self.live_shard_locks()):
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

