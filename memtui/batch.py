"""``memtui --batch``: run or resume an analysis headless.

stdout carries data only (the final table, or summary.json with ``--json``); progress and messages
go to stderr (a rich progress bar when stderr is a terminal, else one plain line per ~10%).
SIGINT / SIGTERM / SIGHUP stop the run after the current batch (exit 130, resumable); a second one
aborts. A Ctrl-C before the run starts exits 130 quietly.
Never imports Textual (a test enforces it).
"""
from __future__ import annotations

import argparse
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from .signals import StopOnSignals
from .exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK, EXIT_USAGE

SPEC_FLAGS = ("analysis", "base", "ablated", "lora_scale", "lora_fuse", "erased", "reference", "method", "steps", "batch_size", "shards",
              "compile", "precision", "device", "seed", "max_items", "num_reference", "image_size", "normal")


def _err(msg: str) -> None:
    print(f"memtui: {msg}", file=sys.stderr, flush=True)


def spec_from_args(args: argparse.Namespace) -> Any:
    """The RunSpec to run: ``--spec`` file (else the run directory's stored spec, if any) with the
    given flags on top: the spec flags, an analysis switch (``--generate``), every analysis' declared
    option flags (into ``spec.options``), ``--detectors`` and ``--demo``. Raises SpecError."""
    from memtui.engine import analyses
    from memtui.engine.core.options import flag_dest, given_flags
    from memtui.engine.runs.spec import RunSpec, read_spec_file
    from memtui.engine.runs.store import RunDir

    data: dict[str, Any] = {}
    if args.spec:
        data = read_spec_file(args.spec)
    elif args.out and RunDir(args.out).exists():
        data = RunDir(args.out).read_spec_dict()  # resume (or --restart) with the stored spec
    given = {name: getattr(args, name) for name in SPEC_FLAGS if getattr(args, name, None) is not None}
    data.update(given)
    options: dict[str, Any] = {}
    for a in analyses.all_analyses():
        if a.switch and getattr(args, flag_dest(a.switch), False):
            data["analysis"] = a.name
        options.update(given_flags(args, a.Options))
    if options:
        data["options"] = {**(data.get("options") or {}), **options}
    from memtui.engine.inversion.registry import method_names, options_class

    from memtui.engine.inversion.config import CommonOptions

    shared = given_flags(args, CommonOptions)  # every method's settings -> the spec's [inversion] table
    if shared:
        data["inversion"] = {**(data.get("inversion") or {}), **shared}
    for method in method_names():  # method option flags -> the spec's [inversion.<method>] table
        mine = given_flags(args, options_class(method))
        if mine:
            inversion = dict(data.get("inversion") or {})
            inversion[method] = {**(inversion.get(method) or {}), **mine}
            data["inversion"] = inversion
    from .batch_evals import apply_eval_flags

    apply_eval_flags(args, data)
    from .batch_demo import apply_demo_flags

    apply_demo_flags(args, data)
    name = data.get("analysis", "concept")
    if name in analyses.names():
        analyses.get(name).fold_flags(data, {**given, **options})
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


def print_table(summary: dict[str, Any], run_dir: Path) -> None:
    """The analysis' final table (its declaration's ``table``) on stdout."""
    from rich.console import Console
    from rich.table import Table

    from memtui.engine import analyses

    console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    name = summary.get("analysis")
    if name not in analyses.names():
        import json

        console.print_json(json.dumps(summary))
        return
    data = analyses.get(name).table(summary, run_dir)
    if data.columns:
        table = Table(title=data.title)
        for i, col in enumerate(data.columns):
            table.add_column(col, justify="left" if i == 0 else "right", overflow="fold")
        for row in data.rows:
            table.add_row(*row)
        console.print(table)
    for line in data.notes:
        console.print(line, markup=False)


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


def _preflight(spec: Any) -> list[str]:
    """Problems found before the run directory is written (device, damaged model files); a demo
    spec's models are made by the run itself, so only its device is checked."""
    from memtui.engine.runs.lifecycle import device_problem, preflight_problems

    if spec.demo:
        problem = device_problem(spec.device)
        return [problem] if problem else []
    return preflight_problems(spec)


def run_batch(args: argparse.Namespace) -> int:
    """Run ``args`` headless; returns the exit code (see ``memtui --help``). A Ctrl-C before the
    run has started (while the libraries load) exits 130 with the resume hint, no traceback."""
    try:
        return _run_batch(args)
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        try:
            _err("interrupted; resume with the same command" + (f" (run directory {out})" if out else ""))
        except (OSError, ValueError):
            pass
        return EXIT_INTERRUPTED


def _run_failed(reporter: Any, e: BaseException) -> int:
    """Report a run's unexpected failure (traceback, then one line); returns EXIT_FAILED."""
    reporter.close()
    traceback.print_exception(e, file=sys.stderr)
    _err(f"run failed: {type(e).__name__}: {e}")
    return EXIT_FAILED


def _run_batch(args: argparse.Namespace) -> int:
    """:func:`run_batch` without its KeyboardInterrupt guard."""
    from memtui.engine.data.datasets import DatasetError
    from memtui.engine.runs.store import RunDir, RunLockedError
    from memtui.engine.runs.spec import SpecError

    if getattr(args, "sweep_status", None) or getattr(args, "sweep", None):
        from .batch_sweep import run_sweep_command, sweep_status

        return sweep_status(Path(args.sweep_status)) if args.sweep_status else run_sweep_command(args)
    if getattr(args, "report", None):
        from .batch_evals import run_report

        return run_report(args)
    if not args.out:
        _err("--batch needs --out RUN_DIR")
        return EXIT_USAGE
    try:
        spec = spec_from_args(args)
        problems = _preflight(spec)
        if problems:
            raise SpecError("cannot run this spec:\n" + "\n".join(f"  - {p}" for p in problems))
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
    from memtui.engine.compute.run import run_spec
    from memtui.engine.model.loading import LoadingError

    cancel = threading.Event()
    reporter = Reporter()
    if not reporter.tty:
        _quiet_library_progress()
    try:
        with StopOnSignals(cancel, "stopping after the current batch (the run stays resumable); interrupt "
                                   "again to abort"):
            from .batch_demo import before_run

            before_run(spec, rd)
            summary = run_spec(spec, rd, progress=reporter, cancel=cancel)
        for follow in analyses.get(spec.analysis).follow_ups(spec):
            line = follow.after_line(summary)
            if line:
                _err(line)
    except KeyboardInterrupt:
        reporter.close()
        _err(f"aborted; resume with the same command (run directory {rd.path})")
        return EXIT_INTERRUPTED
    except InterruptedError as e:
        if not cancel.is_set():
            return _run_failed(reporter, e)
        # a stop during a follow-up (the demo's prompt test): the analysis' records stay; the same
        # command runs the follow-up again
        reporter.close()
        _err(f"cancelled ({e}); the run's records are kept: the same command finishes it (run directory {rd.path})")
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
        return _run_failed(reporter, e)
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
