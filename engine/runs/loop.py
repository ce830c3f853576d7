"""The one item loop every analysis runs in: lock, events, records, cancel and out-of-memory back-off.

An analysis subclasses :class:`ItemLoop` and keeps only what is its own:

- ``plan()``: every item id of the run, in order (reads datasets, checks options);
- ``groups(done)``: the work, as a sequence of *groups* of jobs (a generator, run lazily between
  batches). A group is what is prepared together (images loaded, a decoder stage run, ...); it may
  emit error records itself (:meth:`ItemLoop.emit`) and is computed in batches of at most
  ``batch_size`` jobs;
- ``compute(jobs)``: one batch -> a result the analysis understands (may raise out-of-memory);
- ``write(job, result, j, seconds)``: write job ``j``'s files, return its ``ok`` record;
- ``failed_record(job, message)``: the ``error`` record of a job that could not be computed;
- ``summarize()``: the analysis' summary fields from ``results.jsonl``;
- ``units()`` (optional): the plan as the groups of ids one shard must compute together (default:
  each item alone).

The loop does the rest, the same for every analysis (``docs/run-format.md``):

- **lock**: :func:`run_locked` prepares the directory (new / resume, torn tails cut), takes
  ``run.pid`` (:class:`RunLockedError` if a live process holds it) and releases it at the end;
- **events**: ``started`` / ``resumed`` (``total``, ``done``, ``pid``, ``batch_size``, ``device``,
  ``format_version``), ``item_done`` / ``item_error`` per record, ``progress`` per batch
  (``done``, ``total``, ``batch_size``, ``seconds``), then ``finished`` or ``cancelled``; ``failed``
  (with the traceback) on any other exception, which is re-raised; ``cancelled`` with
  ``reason: interrupted`` on KeyboardInterrupt;
- **records** are appended after their files are written (atomically), so a record implies its files;
  ``progress(done, total, record)`` is called after each;
- **cancel** (an Event, or a zero-argument callable) is checked before each group and each batch (and
  by any stage that raises :class:`RunCancelled`): the run stops, summary status ``cancelled``,
  resumable; resuming recomputes no item whose latest record is ``ok``;
- **out-of-memory back-off**: a batch that raises an accelerator OOM empties the cache of the
  accelerator in use, logs a ``progress`` event ``stage="oom"`` and is retried at half the batch size
  (kept for the rest of the session); a job that fails alone becomes an ``error`` record and the run
  goes on;
- **summary.json** gets ``status``, ``complete``, ``format_version`` and session ``timing``;
- **shards** (``spec.shards`` = K > 1, :mod:`memtui.engine.runs.shards`): the holder of the run starts
  K shard processes instead of computing, waits, folds their results and writes the one summary; a
  shard (``RunDir(path, shard=(i, K))``) computes its units only, logs in its own events and writes
  no summary.

Torch-free at import (the ``generate`` analysis is imported by spec validation).
"""
from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from memtui.engine.core.cancel import is_cancelled
from memtui.engine.core.device import empty_cache, is_oom, resolve_device
from memtui.engine.core.io import utc_now
from memtui.engine.runs.schema import FORMAT_VERSION
from memtui.engine.runs.identity import model_identities
from memtui.engine.runs.spec import RunSpec, SpecMismatchError
from memtui.engine.runs.store import RunDir

Progress = Callable[[int, int, dict[str, Any]], None]
"""``progress(done, total, record)``: items with a record so far, items of the run, the last record."""

__all__ = ["ItemLoop", "RunCancelled", "Progress", "run_locked", "oom_message"]


class RunCancelled(Exception):
    """The run's cancel signal was seen; the run stops and stays resumable."""


def oom_message(exc: BaseException) -> str:
    """The error of an item that ran out of accelerator memory even alone."""
    return f"accelerator out of memory at batch size 1 ({type(exc).__name__})"


_MISSING = object()


def fingerprint_differences(stored: Mapping[str, Any], current: Mapping[str, Any],
                            defaults: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Top-level keys where a run's recorded fingerprint and the current one differ, ``{key:
    (stored, current)}``. A setting the recorded one lacks (added to memtui after the run started:
    ``lora_scale``, a method's new option) matches when its current value is its default, at any
    depth of the nested inversion tables, so older runs resume."""

    def same(s: Any, c: Any, d: Any) -> bool:
        if s == c:
            return True
        if isinstance(s, Mapping) and isinstance(c, Mapping):
            d = d if isinstance(d, Mapping) else {}
            return all(same(s.get(k, _MISSING), c.get(k, _MISSING), d.get(k, _MISSING)) for k in set(s) | set(c))
        return s is _MISSING and d is not _MISSING and c == d

    return {k: (stored.get(k), current.get(k)) for k in sorted(set(stored) | set(current))
            if not same(stored.get(k, _MISSING), current.get(k, _MISSING), defaults.get(k, _MISSING))}


class ItemLoop:
    """One process working on one run directory (see module docstring for the hooks)."""

    analysis: ClassVar[str] = ""

    def __init__(self, spec: RunSpec, rd: RunDir, progress: Progress | None = None, cancel: Any = None) -> None:
        self.spec, self.rd, self.progress, self.cancel = spec, rd, progress, cancel
        self.batch_size = spec.initial_batch_size()
        self.device = resolve_device(spec.device)
        self.ids: list[str] = []
        self.done = 0
        self.total = 0

    # ------------------------------------------------------------------ hooks (override)
    def plan(self) -> list[str]:
        """Every item id of the run, in order."""
        raise NotImplementedError

    def groups(self, done: set[str]) -> Iterable[Sequence[Any]]:
        """The jobs still to compute (items not in ``done``), in groups; may emit error records."""
        raise NotImplementedError

    def compute(self, jobs: Sequence[Any]) -> Any:
        """Compute one batch of jobs (at most ``batch_size``); may raise an accelerator OOM."""
        raise NotImplementedError

    def write(self, job: Any, result: Any, j: int, seconds: float) -> dict[str, Any]:
        """Write the files of ``job`` (the ``j``-th of the batch ``result`` came from) and return
        its ``ok`` record. ``seconds``: the batch's compute time per job."""
        raise NotImplementedError

    def failed_record(self, job: Any, message: str) -> dict[str, Any]:
        """The ``error`` record of ``job`` (it could not be computed: ``message``)."""
        raise NotImplementedError

    def summarize(self) -> dict[str, Any]:
        """The analysis' summary fields (from the run's records)."""
        raise NotImplementedError

    def units(self) -> list[list[str]]:
        """The plan's ids grouped into what one shard must compute together, in plan order
        (default: each item alone). Called after :meth:`plan`."""
        return [[i] for i in self.ids]

    def shard_ids(self) -> set[str]:
        """The ids this writer computes: the whole plan, or its shard's units."""
        if self.rd.shard is None:
            return set(self.ids)
        from memtui.engine.runs.shards import shard_units

        return shard_units(self.units(), *self.rd.shard)

    def done_ids(self) -> set[str]:
        """Ids of the plan that need no work: latest record ``ok`` and :meth:`record_usable` (an ok
        record whose files are gone or damaged is computed again)."""
        results = self.rd.read_results()
        return {i for i in set(self.ids) & self.rd.done_ids() if self.record_usable(results[i])}

    def record_usable(self, rec: Mapping[str, Any]) -> bool:
        """Whether an ``ok`` record can be trusted on resume: every file it names (``latents/...``,
        ``images/...``) exists and is not empty, a safetensors file with a complete header."""
        for value in rec.values():
            if isinstance(value, str) and value.startswith(("latents/", "images/")) and \
                    not _file_intact(self.rd.path / value):
                return False
        return True

    def check_fingerprint(self, events: Sequence[Mapping[str, Any]], fingerprint: Mapping[str, Any]) -> None:
        """:class:`SpecMismatchError` when the ``started`` event recorded another spec fingerprint
        than this spec's (spec.json edited by hand); runs that recorded none are not checked."""
        stored = next((e.get("fingerprint") for e in events if e.get("type") == "started"), None)
        if not isinstance(stored, dict) or stored == fingerprint:
            return
        defaults = json.loads(json.dumps(self.spec.default_fingerprint(), default=str))
        diff = fingerprint_differences(stored, fingerprint, defaults)
        if diff:
            raise SpecMismatchError(self.rd.path, diff)

    def is_complete(self, cancelled: bool) -> bool:
        """Whether every item of the plan has a record (``ok`` or ``error``)."""
        return not cancelled and self.rd.done_ids(("ok", "error")) >= set(self.ids)

    def session_fields(self) -> dict[str, Any]:
        """Summary fields of this session (device, batch size, ...) set by the loop's caller."""
        return {}

    def end_fields(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Extra fields of the ``finished`` / ``cancelled`` event."""
        return {"n_errors": len(summary.get("errors") or [])}

    def finish(self, summary: dict[str, Any], cancelled: bool) -> dict[str, Any]:
        """Last step before summary.json is written (e.g. detectors); returns the summary."""
        return summary

    def write_summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write summary.json; returns what was written."""
        self.rd.write_summary(summary)
        return summary

    # ------------------------------------------------------------------ services (call)
    def emit(self, rec: dict[str, Any]) -> None:
        """Append ``rec`` (its files already written), log ``item_done`` / ``item_error``, report."""
        self.rd.append_result(rec)
        if rec.get("status") == "ok":
            self.rd.event("item_done", item_id=rec["item_id"], set=rec.get("set"),
                          **{k: rec[k] for k in ("psnr", "nll") if k in rec})
        else:
            self.rd.event("item_error", item_id=rec["item_id"], set=rec.get("set"), error=rec.get("error"))
        self.done += 1
        self.notify(rec)

    def notify(self, rec: dict[str, Any]) -> None:
        """Call ``progress(done, total, rec)`` (``rec`` may be a ``status: running`` pseudo-record)."""
        if self.progress is not None:
            self.progress(self.done, self.total, rec)

    def cancelled(self) -> bool:
        """Whether the cancel signal is set."""
        return is_cancelled(self.cancel)

    def check_cancel(self) -> None:
        """Raise :class:`RunCancelled` when the cancel signal is set."""
        if self.cancelled():
            raise RunCancelled()

    def batches(self, seq: Sequence[Any]) -> Iterator[Sequence[Any]]:
        """Consecutive slices of ``seq``, each as long as ``batch_size`` at the time it is taken."""
        i = 0
        while i < len(seq):
            part = seq[i:i + self.batch_size]
            i += len(part)
            yield part

    def run_shards(self, k: int, done: set[str]) -> bool:
        """Compute the run as ``k`` shard processes (:func:`memtui.engine.runs.shards.run_shards`),
        starting only shards with ids not in ``done``; returns whether it was cancelled."""
        from memtui.engine.runs.shards import run_shards, shard_units

        def on_record(done: int, rec: dict[str, Any]) -> None:
            self.done = done
            self.notify(rec)

        self.total = len(self.ids)
        which = [i for i in range(k) if shard_units(self.units(), i, k) - done]  # shards with work left
        cancelled = run_shards(self.rd, k, self.ids, self.cancelled, on_record, which)
        self.done = len(set(self.ids) & set(self.rd.read_results()))
        return cancelled

    # ------------------------------------------------------------------ the loop
    def run_jobs(self, jobs: Sequence[Any]) -> None:
        """Compute ``jobs`` in batches of at most ``batch_size`` with out-of-memory back-off, write
        each job's files and record, log a ``progress`` event per batch."""
        start = 0
        while start < len(jobs):
            self.check_cancel()
            n = min(self.batch_size, len(jobs) - start)
            batch = jobs[start:start + n]
            t = time.monotonic()
            try:
                result = self.compute(batch)
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest propagates
                if not is_oom(e):
                    raise
                empty_cache(self.device)
                if n == 1:
                    self.emit(self.failed_record(batch[0], oom_message(e)))
                    start += 1
                    continue
                self.batch_size = max(1, n // 2)
                self.rd.event("progress", stage="oom", batch_size=self.batch_size,
                              message=f"out of memory at batch size {n}; retrying at {self.batch_size}")
                continue
            secs = (time.monotonic() - t) / n
            for j, job in enumerate(batch):
                self.emit(self.write(job, result, j, secs))
            start += n
            self.rd.event("progress", done=self.done, total=self.total, batch_size=self.batch_size,
                          seconds=round(time.monotonic() - t, 3))

    def run(self) -> dict[str, Any]:
        """Plan, log ``started`` / ``resumed``, work group by group until done or cancelled, write
        summary.json, log ``finished`` / ``cancelled``; returns the summary."""
        t0, started = time.monotonic(), utc_now()
        self.ids = list(self.plan())
        mine = self.shard_ids()
        self.total = len(mine)
        done = self.done_ids() & mine
        self.done = len(done)
        events = self.rd.read_events()
        first = not events
        fingerprint = json.loads(json.dumps(self.spec.fingerprint(), default=str))
        if not first:
            self.check_fingerprint(events, fingerprint)
        shards = 1 if self.rd.shard else self.spec.shards
        where = ({"shard": list(self.rd.shard)} if self.rd.shard else {"shards": shards} if shards > 1 else {})
        models = {"models": model_identities(self.spec)} if first and not self.rd.shard else {}
        self.rd.event("started" if first else "resumed", total=self.total, done=self.done, pid=os.getpid(),
                      batch_size=self.batch_size, device=self.device, format_version=FORMAT_VERSION,
                      **where, **({"fingerprint": fingerprint} if first else {}), **models)
        cancelled = False
        try:
            if shards > 1:
                cancelled = self.run_shards(shards, done)
            else:
                groups = iter(self.groups(done | (set(self.ids) - mine)))
                while True:
                    self.check_cancel()
                    jobs = next(groups, None)
                    if jobs is None:
                        break
                    self.run_jobs(jobs)
        except RunCancelled:
            cancelled = True
        if self.rd.shard is not None:  # the holder of the run summarizes
            self.rd.event("cancelled" if cancelled else "finished", done=self.done, total=self.total)
            return {"status": "cancelled" if cancelled else "finished", "shard": list(self.rd.shard)}
        summary = self.summarize()
        loop_fields = {**self.session_fields(),
                       "status": "cancelled" if cancelled else "finished",
                       "complete": self.is_complete(cancelled), "format_version": FORMAT_VERSION,
                       **({"shards": shards} if shards > 1 else {}),
                       "timing": {"session_started": started, "session_finished": utc_now(),
                                  "session_seconds": round(time.monotonic() - t0, 3)}}
        for k, v in loop_fields.items():
            old = summary.get(k)
            summary[k] = {**old, **v} if isinstance(v, dict) and isinstance(old, dict) else v
        summary = self.write_summary(self.finish(summary, cancelled))
        if cancelled:
            self.rd.event("cancelled", done=self.done, total=self.total,
                          n_errors=len(summary.get("errors") or []))
        else:
            self.rd.event("finished", done=self.done, total=self.total, **self.end_fields(summary))
        return summary


def run_locked(loop: type[ItemLoop], spec: RunSpec, run_dir: RunDir | str | os.PathLike[str],
               progress: Progress | None = None, cancel: Any = None) -> dict[str, Any]:
    """Prepare and lock ``run_dir``, run ``loop(spec, rd, progress, cancel)``, release the lock;
    returns the summary. Raises SpecMismatchError / RunLockedError before any work; logs
    ``cancelled`` on KeyboardInterrupt and ``failed`` (with the traceback) on any other error,
    then re-raises."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    rd.acquire_lock()  # atomically, before the directory is touched: a second process gets RunLockedError
    if rd.shard is None:  # a shard works in a run its holder has prepared
        try:
            rd.prepare(spec)
        except BaseException:
            rd.release_lock()
            raise
    try:
        return loop(spec, rd, progress, cancel).run()
    except KeyboardInterrupt:
        rd.event("cancelled", reason="interrupted")
        raise
    except BaseException as e:
        rd.event("failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=20))
        raise
    finally:
        rd.release_lock()


def _file_intact(path: Path) -> bool:
    """A non-empty file; for ``.safetensors``, one whose header parses and whose size covers the
    tensor data it describes."""
    try:
        size = path.stat().st_size
        if not path.is_file() or size == 0:
            return False
        if path.suffix != ".safetensors":
            return True
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or 8 + n > size:
                return False
            header = json.loads(fh.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        return 8 + n + max(ends, default=0) <= size
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return False
