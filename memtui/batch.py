"""``memtui --batch``: run or resume an analysis headless.

stdout carries data only (the final table, or summary.json with ``--json``); progress and messages
go to stderr (a rich progress bar when stderr is a terminal, else one plain line per ~10%).
SIGINT / SIGTERM stop the run after the current batch (exit 130, resumable); a second one aborts.
Never imports Textual (a test enforces it).
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from .cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK, EXIT_USAGE

SPEC_FLAGS = ("analysis", "base", "ablated", "erased", "reference", "method", "steps", "batch_size",
              "precision", "device", "seed", "max_items", "num_reference", "image_size", "normal")


def _err(msg: str) -> None:
    print(f"memtui: {msg}", file=sys.stderr, flush=True)


def spec_from_args(args: argparse.Namespace) -> Any:
    """The RunSpec to run: ``--spec`` file (else the run directory's stored spec, if any) with the
    given flags on top. Raises SpecError."""
    from memtui.engine.runs.store import RunDir
    from memtui.engine.runs.spec import RunSpec, read_spec_file

    data: dict[str, Any] = {}
    if args.spec:
        data = read_spec_file(args.spec)
    elif args.out and RunDir(args.out).exists():
        data = RunDir(args.out).read_spec_dict()  # resume (or --restart) with the stored spec
    for name in SPEC_FLAGS:
        v = getattr(args, name, None)
        if v is not None:
            data[name] = v
    from .batch_evals import apply_eval_flags

    apply_eval_flags(args, data)
    from .batch_demo import apply_demo_flags

    from .batch_memories import apply_memories_flags

    apply_memories_flags(args, data)
    apply_demo_flags(args, data)
    return RunSpec.from_dict(data).resolved_paths()


class Reporter:
    """``progress(done, total, record)`` callback drawing on stderr."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: Any = None
        self._task: Any = None
        self._last_decile = -1
        self.errors = 0

    def __call__(self, done: int, total: int, record: dict[str, Any]) -> None:
        if record.get("status") == "error":
            self.errors += 1
        if self.tty:
            self._draw(done, total, record)
            return
        decile = int(10 * done / total) if total else 10
        if decile > self._last_decile or done == total:
            self._last_decile = decile
            print(f"memtui: {done}/{total} items ({100 * done / max(total, 1):.0f}%), {self.errors} error(s)",
                  file=self.stream, flush=True)

    def _draw(self, done: int, total: int, record: dict[str, Any]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self._bar is None:
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[last]}"),
                                 console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("inverting", total=total, completed=done - 1, last="")
        last = record.get("item_id", "")
        if record.get("status") == "error":
            last = f"{last}: error"
        elif isinstance(record.get("psnr"), (int, float)):
            last = f"{last}: {record['psnr']:.2f} dB"
        self._bar.update(self._task, completed=done, total=total, last=last)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class _Signals:
    """SIGINT/SIGTERM -> set ``cancel`` (first time), KeyboardInterrupt (second time)."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt
        self.cancel.set()
        _err("stopping after the current batch (the run stays resumable); interrupt again to abort")

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def _fmt(stats: Any, digits: int = 2) -> str:
    if not isinstance(stats, dict) or not isinstance(stats.get("mean"), (int, float)):
        return "-"
    std = stats.get("std")
    std_txt = f" ± {std:.{digits}f}" if isinstance(std, (int, float)) else ""
    return f"{stats['mean']:.{digits}f}{std_txt}"


def _num(v: Any, fmt: str = ".4g") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else "n/a"


def print_table(summary: dict[str, Any], run_dir: Path) -> None:
    """The final per-set PSNR / NLL table and the relative distance, on stdout."""
    from rich.console import Console
    from rich.table import Table

    from .batch_evals import print_detection, print_generate

    if summary.get("analysis") == "generate":
        print_generate(summary, run_dir)
        return
    if summary.get("analysis") in ("memories", "scramble"):
        from .batch_memories import print_image_level

        print_image_level(summary, run_dir)
        return
    console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    sets = summary.get("sets")
    if not isinstance(sets, dict):
        import json

        console.print_json(json.dumps(summary))
        return
    table = Table(title=f"{summary.get('analysis', '')} · {summary.get('method', '')} · {run_dir}")
    for col in ("set", "items", "ok", "errors", "PSNR dB", "PSNR VAE dB", "NLL nats"):
        table.add_column(col, justify="left" if col == "set" else "right")
    for name, s in sets.items():
        table.add_row(name, str(s.get("n_items", "")), str(s.get("n_ok", "")), str(s.get("n_errors", "")),
                      _fmt(s.get("psnr")), _fmt(s.get("psnr_vae")), _fmt(s.get("nll"), 1))
    console.print(table)
    unit = "nats²" if summary.get("emd_metric", "w2") == "w2" else "nats"
    normal = summary.get("normal") or {}
    console.print(f"EMD erased–normal     {_num(summary.get('erased_normal'))} {unit}")
    console.print(f"EMD reference–normal  {_num(summary.get('reference_normal'))} {unit}")
    console.print(f"EMD erased–reference  {_num(summary.get('erased_reference'))} {unit}"
                  f"   (normal: {normal.get('mode', '?')})")
    console.print(f"relative distance     {_num(summary.get('relative_distance'))}")
    for reason in summary.get("reasons") or []:
        console.print(f"  note: {reason}")
    if summary.get("errors"):
        console.print(f"{len(summary['errors'])} item(s) in error (see {run_dir / 'summary.json'})")
    print_detection(summary)


def _quiet_library_progress() -> None:
    """Turn off the Hugging Face libraries' own progress bars (they would clutter a log file)."""
    try:
        from transformers.utils import logging as tlog

        tlog.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    try:
        from diffusers.utils import logging as dlog

        dlog.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass


def _exit_code(summary: dict[str, Any]) -> int:
    if summary.get("status") == "cancelled":
        return EXIT_INTERRUPTED
    sets = summary.get("sets")
    if isinstance(sets, dict) and sets:
        n_ok = sum(int(s.get("n_ok", 0) or 0) for s in sets.values() if isinstance(s, dict))
        if n_ok == 0:
            return EXIT_FAILED
    return EXIT_OK


def run_batch(args: argparse.Namespace) -> int:
    """Run ``args`` headless; returns the exit code (see ``memtui --help``)."""
    from memtui.engine.data.datasets import DatasetError
    from memtui.engine.runs.store import RunDir, RunLockedError
    from memtui.engine.runs.spec import SpecError

    if getattr(args, "report", None):
        from .batch_evals import run_report

        return run_report(args)
    if not args.out:
        _err("--batch needs --out RUN_DIR")
        return EXIT_USAGE
    try:
        spec = spec_from_args(args)
        rd = RunDir(args.out)
        mode = rd.prepare(spec, restart=args.restart)
    except RunLockedError as e:
        _err(str(e))
        return EXIT_LOCKED
    except (SpecError, DatasetError, OSError) as e:
        _err(str(e))
        return EXIT_USAGE
    if mode == "resume":
        done, total = rd.progress()
        _err(f"resuming {rd.path} ({rd.status()}, {done}/{total if total is not None else '?'} items recorded)")
    elif mode == "restart":
        _err(f"restarting {rd.path} (old contents moved to .old-*/)")

    from memtui.engine import analyses
    from memtui.engine.model.loading import LoadingError

    cancel = threading.Event()
    reporter = Reporter()
    if not reporter.tty:
        _quiet_library_progress()
    try:
        with _Signals(cancel):
            from .batch_demo import after_run, before_run

            before_run(spec, rd)
            summary = analyses.run(spec, rd, progress=reporter, cancel=cancel)
            summary = after_run(args, spec, rd, summary, cancel)
    except KeyboardInterrupt:
        reporter.close()
        _err(f"aborted; resume with the same command (run directory {rd.path})")
        return EXIT_INTERRUPTED
    except RunLockedError as e:
        reporter.close()
        _err(str(e))
        return EXIT_LOCKED
    except (SpecError, DatasetError, LoadingError) as e:
        reporter.close()
        _err(str(e))
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - reported, logged in events.jsonl
        reporter.close()
        traceback.print_exc(file=sys.stderr)
        _err(f"run failed: {type(e).__name__}: {e}")
        return EXIT_FAILED
    reporter.close()
    if args.json:
        sys.stdout.write((rd.path / RunDir.SUMMARY).read_text(encoding="utf-8"))
    else:
        print_table(summary, rd.path)
    sys.stdout.flush()
    code = _exit_code(summary)
    if code == EXIT_INTERRUPTED:
        _err(f"cancelled; resume with the same command (run directory {rd.path})")
    elif code == EXIT_FAILED:
        _err("every item is in error")
    return code
