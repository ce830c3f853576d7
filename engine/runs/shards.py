"""One run over several local writer processes (``--shards K``; ``docs/run-format.md``).

The process that holds the run (its ``run.pid``) starts ``K`` shard processes, ``python -m
memtui.engine.runs.shards RUN_DIR i K``, each in its own session with its log in
``shards/shard-<i>-of-<K>/shard.log``, pinned to one visible CUDA GPU round-robin
(``CUDA_VISIBLE_DEVICES``) when there are several, with ``OMP_NUM_THREADS`` = its share of the CPU
cores unless set. Shard ``i`` computes the plan's *units* ``i``,
``i + K``, ``i + 2K``, ... (a unit is what must be computed together: one item for the concept
analysis, a target with its memories and controls for memories and scramble) and appends to its
own ``results.jsonl`` / ``events.jsonl`` under its own ``run.pid``: no two writers touch one file.

While they run, the holder logs a ``progress`` event with the run's merged count every
:data:`POLL_S` seconds (readers of events.jsonl see one run) and reports new records to its
``progress`` callback; on cancel it sends each shard SIGTERM (it stops after its current batch).
When all have exited, it folds their results into the run's ``results.jsonl``
(:meth:`RunDir.fold_shards`) and the item loop writes the one summary.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from memtui.engine.runs.spec import MAX_SHARDS
from memtui.engine.runs.store import RunDir

__all__ = ["MAX_SHARDS", "ShardsFailedError", "shard_units", "run_shards", "main"]

POLL_S = 1.0
EXIT_CANCELLED = 130


class ShardsFailedError(RuntimeError):
    """A shard process ended with an error (its log is named)."""


def shard_units(units: Sequence[Sequence[str]], i: int, k: int) -> set[str]:
    """The item ids of shard ``i`` of ``k``: units ``i, i + k, i + 2k, ...`` of the plan's units."""
    return {iid for n, unit in enumerate(units) if n % k == i for iid in unit}


def _env(i: int, k: int, gpus: Sequence[str]) -> dict[str, str]:
    """Shard ``i``'s environment: one of several GPUs, and (unless the user set it) an equal share
    of this host's CPU threads (``OMP_NUM_THREADS``), so K shards do not oversubscribe the cores."""
    env = dict(os.environ)
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // k))
    return env


def run_shards(rd: RunDir, k: int, ids: Sequence[str], cancelled: Callable[[], bool],
               on_record: Callable[[int, dict[str, Any]], None] | None = None,
               which: Sequence[int] | None = None) -> bool:
    """Run shards ``which`` (default ``0..k-1``) of the ``k`` of ``rd`` (held by this process) to
    their end and fold their results; returns whether the session was cancelled. ``ids``: the
    run's plan (for the merged count); ``on_record(done, record)`` is called for each record that
    appeared since the last poll. Raises :class:`ShardsFailedError` when a shard failed (after the
    others have ended)."""
    from memtui.engine.runs.executors.local import visible_gpus

    gpus = visible_gpus()
    procs: dict[int, subprocess.Popen[bytes]] = {}
    wanted = set(ids)
    seen: dict[str, dict[str, Any]] = {}
    stopping = False
    try:
        for i in range(k) if which is None else which:
            d = rd.shard_dir(i, k)
            d.mkdir(parents=True, exist_ok=True)
            with open(d / RunDir.SHARD_LOG, "ab") as log:
                procs[i] = (subprocess.Popen(
                    [sys.executable, "-m", "memtui.engine.runs.shards", str(rd.path), str(i), str(k)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=_env(i, k, gpus),
                    start_new_session=True))
        last = -1
        while True:
            alive = [p for p in procs.values() if p.poll() is None]
            if not stopping and cancelled():
                stopping = True
                for p in alive:
                    p.send_signal(signal.SIGTERM)
            records = rd.read_results()
            new = [r for iid, r in records.items() if iid in wanted and seen.get(iid) != r]
            for r in new:
                seen[r["item_id"]] = r
            done = sum(1 for iid in records if iid in wanted)
            if on_record is not None:
                for r in new:
                    on_record(done, r)
            if done != last:
                rd.event("progress", done=done, total=len(wanted), shards=k,
                         running=len(alive))
                last = done
            if not alive:
                break
            time.sleep(POLL_S)
    except BaseException:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait()
        raise
    # A shard stopped by our SIGTERM before it set its handler (still importing) dies of the signal:
    # that is the cancellation asked for, not a failure (its records so far are on disk).
    stopped = (0, EXIT_CANCELLED, -signal.SIGTERM) if stopping else (0, EXIT_CANCELLED)
    failed = [(i, p.returncode) for i, p in procs.items() if p.returncode not in stopped]
    for i, p in procs.items():
        if stopping and p.returncode == -signal.SIGTERM:  # it could not say so itself
            RunDir(rd.path, shard=(i, k)).event("cancelled", reason="stopped before its handler was set")
    rd.fold_shards()
    if failed:
        raise ShardsFailedError("; ".join(
            f"shard {i} of {k} ended with exit status {rc} (see {rd.shard_dir(i, k) / RunDir.SHARD_LOG})"
            for i, rc in failed))
    return stopping or any(p.returncode == EXIT_CANCELLED for p in procs.values())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m memtui.engine.runs.shards RUN_DIR I K``: compute shard ``I`` of ``K`` of the run
    prepared in RUN_DIR. SIGTERM / SIGINT stop it after its current batch (exit 130); 2 when its
    lock is held; 1 on an error (its traceback is in its events and on stderr)."""
    from memtui.engine import analyses
    from memtui.engine.runs.store import RunLockedError

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m memtui.engine.runs.shards RUN_DIR I K", file=sys.stderr)
        return 2
    path, i, k = args[0], int(args[1]), int(args[2])
    cancel = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *_: cancel.set())
    rd = RunDir(path, shard=(i, k))
    spec = RunDir.open(path).read_spec()
    try:
        out = analyses.get(spec.analysis).run(spec, rd, progress=None, cancel=cancel)
    except RunLockedError as e:
        print(f"memtui shard {i}/{k}: {e}", file=sys.stderr)
        return 2
    return EXIT_CANCELLED if out.get("status") == "cancelled" else 0


if __name__ == "__main__":
    raise SystemExit(main())
