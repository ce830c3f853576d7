"""``memtui --batch --sweep FILE --out SWEEP_DIR`` (run a sweep's cells, see docs/sweeps.md) and
``memtui --batch --sweep-status SWEEP_DIR`` (print its grid). Never imports Textual or torch at
import time."""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any

from .signals import StopOnSignals
from .exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK, EXIT_USAGE

__all__ = ["add_sweep_arguments", "run_sweep_command", "sweep_status", "status_rows"]


def _err(msg: str) -> None:
    try:
        print(f"memtui: {msg}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    from memtui.engine.runs.executors import DEFAULT_EXECUTOR

    g = p.add_argument_group("sweeps (with --batch; docs/sweeps.md)")
    g.add_argument("--sweep", metavar="FILE", help="run every cell of a sweep file (TOML) into --out SWEEP_DIR; "
                   "finished cells are skipped, interrupted ones resumed")
    g.add_argument("--sweep-status", dest="sweep_status", metavar="SWEEP_DIR",
                   help="print a sweep's cells: status, progress, headline, worker")
    g.add_argument("--executor", metavar="NAME", help=f"how cells run (default: the file's, else {DEFAULT_EXECUTOR})")
    g.add_argument("--workers", type=int, metavar="N",
                   help="cells at once (local: default one per visible CUDA GPU, else 1)")


def run_sweep_command(args: argparse.Namespace) -> int:
    """Validate the sweep file (every cell's spec) before anything is written, then run it."""
    from memtui.engine.runs.executors import executor_names
    from memtui.engine.runs.sweep import RunLockedError, SweepError, load_sweep, run_sweep

    if not args.out:
        _err("--sweep needs --out SWEEP_DIR")
        return EXIT_USAGE
    try:
        sweep = load_sweep(args.sweep)
        executor = args.executor or sweep.executor
        if executor not in executor_names():
            raise SweepError(f"executor must be one of {', '.join(executor_names())}, got {executor!r}")
        if args.workers is not None and args.workers < 1:
            raise SweepError(f"--workers must be a positive integer, got {args.workers}")
    except SweepError as e:
        _err(str(e))
        return EXIT_USAGE
    cancel = threading.Event()
    try:
        with StopOnSignals(cancel, "stopping every cell after its current batch (the sweep stays resumable)",
                           abort_on_second=False):
            result = run_sweep(sweep, args.out, executor=executor, workers=args.workers, cancel=cancel, say=_err)
    except RunLockedError as e:
        _err(str(e))
        return EXIT_LOCKED
    except (ValueError, OSError, RuntimeError) as e:
        _err(str(e))
        return EXIT_USAGE
    counts = {s: result.count(s) for s in ("finished", "failed", "cancelled", "pending")}
    _err("sweep: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    sweep_status(Path(args.out))
    if result.cancelled:
        _err(f"interrupted; resume with the same command (sweep directory {args.out})")
        return EXIT_INTERRUPTED
    return EXIT_FAILED if counts["failed"] or counts["pending"] or counts["cancelled"] else EXIT_OK


def status_rows(sweep_dir: Path) -> list[dict[str, str]]:
    """One row per cell (``memtui.sweeps.sweep_rows``, which the console's Sweep screen reads too)."""
    from .sweeps import sweep_rows

    return sweep_rows(sweep_dir)


def sweep_status(sweep_dir: Path) -> int:
    """Print the grid (stdout); exit 2 when ``sweep_dir`` is not a sweep directory."""
    try:
        rows = status_rows(Path(sweep_dir))
    except (OSError, ValueError) as e:
        _err(str(e))
        return EXIT_USAGE
    cols = ("cell", "status", "progress", "worker", "headline")
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols).rstrip()]
    for r in rows:
        lines.append("  ".join(r[c].ljust(widths[c]) for c in cols).rstrip())
        if r["error"]:
            lines.append(f"    error: {r['error']}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines.append(f"{len(rows)} cell(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return EXIT_OK
