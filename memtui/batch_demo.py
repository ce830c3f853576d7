"""``--demo`` for ``memtui --batch``: run the concept analysis on the shipped demo world's erased twin
and add the prompt test to ``summary.json`` (see :mod:`memtui.engine.demo.runner`). Flags only; the
work happens in the engine. Never imports torch at import time.
"""
from __future__ import annotations

import argparse
import sys
import threading
from typing import Any


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``demo`` flag group."""
    g = p.add_argument_group("demo")
    g.add_argument("--demo", action="store_true", default=None,
                   help="use the built-in demo world: a tiny shapes model with 'circle' erased by ESD; draws "
                        "the erased/reference sets into RUN_DIR/data and adds a prompt test to summary.json "
                        "(inversion method DDIM unless --method is given; --steps, --max-items etc. still apply)")
    g.add_argument("--demo-samples", dest="demo_samples", type=int, metavar="N", default=None,
                   help="prompt-test samples per model and concept (default 64)")


def apply_demo_flags(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """With ``--demo``: fill the spec's model and dataset fields (unless given) and draw the datasets."""
    if not getattr(args, "demo", None) or not getattr(args, "out", None):
        return
    from memtui.engine.demo.runner import demo_spec_fields

    for k, v in demo_spec_fields(args.out).items():
        if k == "options":
            data["options"] = {**v, **(data.get("options") or {})}
        elif data.get(k) in (None, "", False):
            data[k] = v
    data.setdefault("method", "ddim")  # nearly lossless at 32x32 and fast; --method renoise for the paper's


def before_run(spec: Any, run_dir: Any) -> None:
    """Redraw a demo run's datasets if missing (e.g. moved away by --restart)."""
    if getattr(spec, "demo", False):
        from memtui.engine.demo.runner import ensure_demo_data

        ensure_demo_data(run_dir.path)


def after_run(args: argparse.Namespace, spec: Any, run_dir: Any, summary: dict[str, Any],
              cancel: threading.Event) -> dict[str, Any]:
    """Add the prompt test to a finished demo run's summary (printed as one line on stderr)."""
    if not getattr(spec, "demo", False) or summary.get("status") == "cancelled" or cancel.is_set():
        return summary
    from memtui.engine.demo.runner import PROMPT_N, add_prompt_test

    n = getattr(args, "demo_samples", None) or PROMPT_N
    summary = add_prompt_test(spec, run_dir, n=n, cancel=cancel)
    pt = summary.get("prompt_test") or {}
    models = pt.get("models", {})
    parts = [f"{c}: base {models['base'][c]['rate']:.0%} / erased {models['erased'][c]['rate']:.0%}"
             for c in models.get("base", {})]
    print(f"memtui: prompt test (n={n}): " + ", ".join(parts), file=sys.stderr, flush=True)
    return summary
