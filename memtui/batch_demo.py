"""``--demo`` for ``memtui --batch``: fill the spec with the shipped demo world (its base model, the
erased twin and datasets drawn into ``RUN_DIR/data``; see :mod:`memtui.engine.demo.runner`). The
prompt test that follows every demo run is the ``prompt_test`` analysis (``--demo-samples``). Flags
only; never imports torch at import time."""
from __future__ import annotations

import argparse
from typing import Any


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``demo`` flag group."""
    g = p.add_argument_group("demo")
    g.add_argument("--demo", action="store_true", default=None,
                   help="use the built-in demo world: a tiny shapes model with 'circle' erased by ESD; draws "
                        "the erased/reference sets into RUN_DIR/data and adds a prompt test to summary.json "
                        "(inversion method DDIM unless --method is given; --steps, --max-items etc. still apply)")


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
