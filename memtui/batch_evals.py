"""The evaluation flags of ``memtui --batch`` that are not analyses (kept light: no torch at
import): ``--detectors`` (concept detectors that score a run's images) and ``--report RUN_DIR ...
--out REPORT_DIR`` (Markdown + PNG + CSV)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_eval_arguments", "apply_eval_flags", "run_report"]


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """Add the evaluation flags to the memtui parser."""
    from memtui.engine.detectors.registry import detector_kinds  # torch-free: reads each module's table

    kinds = ", ".join(f"{k}:PATH" if d.needs_path else k for k, d in detector_kinds().items())
    g = p.add_argument_group("evaluations (with --batch)")
    g.add_argument("--detectors", metavar="KIND[:PATH][@CONCEPT],...",
                   help=f"detectors scoring the run's images: {kinds}")
    g.add_argument("--report", nargs="+", metavar="RUN_DIR",
                   help="write a report of these run directories into --out (report.md, figures, CSV); "
                   "a sweep directory stands for its cells and adds the erasure × concept grid")


def apply_eval_flags(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Fold ``--detectors`` into a spec dict (in place): parsed entries, existing paths absolute."""
    if not getattr(args, "detectors", None):
        return
    from memtui.engine.detectors.config import parse_detectors
    from memtui.engine.runs.spec import SpecError

    try:
        entries = parse_detectors(args.detectors)
    except ValueError as e:
        raise SpecError(str(e)) from e
    for e in entries:
        if e["path"] and Path(e["path"]).expanduser().exists():
            e["path"] = str(Path(e["path"]).expanduser().resolve())
    data["options"] = {**(data.get("options") or {}), "detectors": entries}


def run_report(args: argparse.Namespace) -> int:
    """``--report RUN_DIR|SWEEP_DIR ... --out REPORT_DIR``: write the report; print report.md's path."""
    from .exit_codes import EXIT_OK, EXIT_USAGE

    if not args.out:
        print("memtui: --report needs --out REPORT_DIR", file=sys.stderr)
        return EXIT_USAGE
    missing = [p for p in args.report if not (Path(p) / "spec.json").is_file()
               and not (Path(p) / "sweep.json").is_file()]
    if missing:
        print(f"memtui: not a run or sweep directory (no spec.json or sweep.json): {', '.join(missing)}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        from memtui.engine.report import write_report

        path = write_report(args.report, args.out)
    except ValueError as e:  # a damaged sweep.json, a sweep with no cell runs yet
        print(f"memtui: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ImportError as e:
        print(f"memtui: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(path)
    return EXIT_OK
