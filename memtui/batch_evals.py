"""The real-evaluation flags of ``memtui --batch`` (kept light: no torch at import):
``--generate --prompts FILE.csv`` (an erased set from a prompt file), ``--detectors`` (concept
detectors that score a run's images), ``--report RUN_DIR ... --out REPORT_DIR`` (Markdown + PNG + CSV).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_eval_arguments", "apply_eval_flags", "run_report"]


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """Add the evaluation flags to the memtui parser."""
    g = p.add_argument_group("evaluations (with --batch)")
    g.add_argument("--generate", action="store_true",
                   help="generate an erased set (imgs/<case>_<k>.png + prompts.csv) into --out from --prompts")
    g.add_argument("--prompts", metavar="FILE.csv",
                   help="prompt CSV: case_number,prompt,evaluation_seed[,evaluation_guidance][,sd_image_height,"
                        "sd_image_width]")
    g.add_argument("--sampler", metavar="NAME", help="generation sampler: lms (default), ddim, euler, euler_a, "
                   "heun, pndm, dpmpp_2m, unipc; --steps sets its steps (default 25)")
    g.add_argument("--guidance", type=float, metavar="G", help="guidance for rows without one (default 7.5)")
    g.add_argument("--images-per-prompt", dest="images_per_prompt", type=int, metavar="K",
                   help="images per prompt row, seeds seed..seed+K-1 (default 1)")
    g.add_argument("--concept", metavar="NAME", help="the run's concept (default: the erased folder's name)")
    g.add_argument("--detectors", metavar="KIND[:PATH][@CONCEPT],...",
                   help="detectors scoring the run's images: nudenet:FILE.onnx, imagenet:DIR, style:DIR, "
                        "clip:DIR, demo")
    g.add_argument("--report", nargs="+", metavar="RUN_DIR",
                   help="write a report of these run directories into --out (report.md, figures, CSV)")


def apply_eval_flags(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Fold the evaluation flags into a spec dict (in place). For generate runs ``--steps`` is the
    sampler's step count (``options.steps``), not the inversion's."""
    opts = dict(data.get("options") or {})
    if getattr(args, "generate", False):
        data["analysis"] = "generate"
    if data.get("analysis") == "generate" and "steps" in data and getattr(args, "steps", None) is not None:
        opts["steps"] = data.pop("steps")
    if getattr(args, "prompts", None):
        opts["prompts"] = str(Path(args.prompts).expanduser().resolve())
    for name in ("sampler", "guidance", "images_per_prompt", "concept"):
        v = getattr(args, name, None)
        if v is not None:
            opts[name] = v
    if getattr(args, "detectors", None):
        from memtui.engine.detectors.config import parse_detectors
        from memtui.engine.runs.spec import SpecError

        try:
            entries = parse_detectors(args.detectors)
        except ValueError as e:
            raise SpecError(str(e)) from e
        for e in entries:
            if e["path"] and Path(e["path"]).expanduser().exists():
                e["path"] = str(Path(e["path"]).expanduser().resolve())
        opts["detectors"] = entries
    if opts:
        data["options"] = opts


def run_report(args: argparse.Namespace) -> int:
    """``--report RUN_DIR ... --out REPORT_DIR``: write the report; print report.md's path."""
    from .cli import EXIT_OK, EXIT_USAGE

    if not args.out:
        print("memtui: --report needs --out REPORT_DIR", file=sys.stderr)
        return EXIT_USAGE
    missing = [p for p in args.report if not (Path(p) / "spec.json").is_file()]
    if missing:
        print(f"memtui: not a run directory (no spec.json): {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from memtui.engine.report import write_report

        path = write_report(args.report, args.out)
    except ImportError as e:
        print(f"memtui: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(path)
    return EXIT_OK


def print_generate(summary: dict[str, Any], run_dir: Path) -> None:
    """The final lines of a generate run on stdout."""
    print(f"generated {summary.get('n_ok', 0)}/{summary.get('n_items', 0)} images into {run_dir}/imgs "
          f"({summary.get('sampler')}, {summary.get('steps')} steps); {summary.get('n_errors', 0)} error(s)")
    for e in (summary.get("errors") or [])[:10]:
        print(f"  {e.get('item_id')}: {e.get('error')}")
    print_detection(summary)


def print_detection(summary: dict[str, Any]) -> None:
    """Detection rates per detector and set (fractions of images flagged), if the run has any."""
    for key, d in (summary.get("detection") or {}).items():
        for s, st in (d.get("sets") or {}).items():
            rates = ", ".join(f"{k[:-5]} {v:.3f}" for k, v in st.items() if k.endswith("_rate"))
            print(f"detection {key} [{d.get('rule')}] {s} (n={st.get('n')}): {rates}")
