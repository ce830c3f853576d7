"""The ``memtui`` command: the Textual console, or with ``--batch`` a headless run.

This module imports neither Textual nor torch at import time: ``memtui --help`` and ``memtui --batch``
stay light, and the console is imported lazily only when it is launched.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from memtui.exit_codes import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_USAGE

def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("memtui")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: the run and spec flags (``RunSpec`` fields), then one group per
    analysis built from its declared options (``memtui.engine.analyses``), the evaluation, demo
    and console flags. Spec-defining flags default to None so that only flags actually given
    override a spec file or a stored run's spec."""
    from memtui.engine import analyses
    from memtui.engine.core.options import add_arguments, flag_dest
    from memtui.engine.inversion.registry import options_class
    from memtui.engine.runs.spec import PRECISIONS, method_names

    p = argparse.ArgumentParser(
        prog="memtui",
        description="Test whether a concept erased from a text-to-image diffusion model is really gone "
                    "(Memories of Forgotten Concepts, CVPR 2025). Without --batch: the console.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", action="store_true", help="run headless (no console): needs --out")
    p.add_argument("--version", action="version", version=f"memtui {_version()}")

    run = p.add_argument_group("run (with --batch)")
    run.add_argument("--spec", metavar="FILE", help="spec file: TOML, JSON, or a run directory's spec.json "
                     "(flags given on the command line override it)")
    run.add_argument("--out", metavar="RUN_DIR", help="run directory to create or resume")
    run.add_argument("--restart", action="store_true",
                     help="start over: move the run directory's contents to RUN_DIR/.old-<timestamp>/")
    run.add_argument("--json", action="store_true", help="print summary.json on stdout instead of the table")
    run.add_argument("--analysis", metavar="NAME",
                     help=f"analysis to run: {', '.join(analyses.main_names())} (default: concept)")

    spec = p.add_argument_group("spec (override the spec file)")
    spec.add_argument("--base", metavar="PATH_OR_CACHED_ID",
                      help="base model: a diffusers folder or a model id in the local HF cache")
    spec.add_argument("--ablated", metavar="PATH", help="ablated (concept-erased) checkpoint")
    spec.add_argument("--lora-scale", dest="lora_scale", type=float, metavar="S",
                      help="weight of a LoRA --ablated adapter (default 1: as trained; 0 leaves the base)")
    spec.add_argument("--lora-fuse", dest="lora_fuse", action=argparse.BooleanOptionalAction, default=None,
                      help="fuse a LoRA --ablated adapter into the weights (default) or keep it as PEFT "
                           "layers (--no-lora-fuse; slower, the base weights untouched)")
    spec.add_argument("--erased", metavar="DIR", help="erased-concept dataset folder")
    spec.add_argument("--reference", metavar="DIR", help="reference dataset folder (e.g. COCO 2017)")
    spec.add_argument("--method", choices=method_names(), help="inversion method (default renoise)")
    spec.add_argument("--steps", type=int, metavar="N", help="diffusion steps (default 50)")
    spec.add_argument("--batch-size", dest="batch_size", type=_batch_size, metavar="B",
                      help="images per batch, or 'auto' (the default): measured from free GPU memory, "
                           "8 on the CPU; may differ on resume")
    spec.add_argument("--compile", action="store_true", default=None,
                      help="torch.compile the UNet (CUDA; the first batch of each shape compiles, "
                           "minutes at 512 px; may differ on resume)")
    spec.add_argument("--shards", type=int, metavar="K",
                      help="split the run's items over K processes on this host, one GPU each where "
                           "there are several (default 1; may differ on resume)")
    spec.add_argument("--precision", choices=PRECISIONS, help="model precision (default fp32)")
    spec.add_argument("--device", metavar="D", help="auto (default), cpu, cuda, cuda:1, mps")
    spec.add_argument("--seed", type=int, metavar="S", help="per-item generator seed (default 42)")
    spec.add_argument("--max-items", dest="max_items", type=int, metavar="N", help="at most N items per set")
    spec.add_argument("--num-reference", dest="num_reference", type=int, metavar="N",
                      help="reference items (default: as many as erased items)")
    spec.add_argument("--image-size", dest="image_size", type=int, metavar="PX",
                      help="square image side (default: the model's native size)")
    spec.add_argument("--normal", choices=("exact", "samples"),
                      help="'normal' NLLs: the exact N(0,I) law (default) or seeded samples")

    users: dict[str, list[str]] = {}  # flag -> the analyses that declare it
    for a in analyses.all_analyses():
        for info in a.option_infos():
            if info.flag:
                users.setdefault(info.flag, []).append(a.name)
    shared = {f for f, names in users.items() if len(names) > 1}
    for a in analyses.all_analyses():
        title = (f"{a.name} (with {a.switch or '--analysis ' + a.name})" if not a.follow_up
                 else f"{a.name} (after every --demo run)")
        g = p.add_argument_group(title, a.question)
        if a.switch:
            g.add_argument(a.switch, dest=flag_dest(a.switch), action="store_true",
                           help=f"run the {a.name} analysis (same as --analysis {a.name})")
        add_arguments(g, a.Options, skip=shared)
    from memtui.engine.inversion.config import CommonOptions

    add_arguments(p.add_argument_group("inversion, every method (a spec's [inversion] table)"), CommonOptions)
    for name in method_names():
        cls = options_class(name)
        g = p.add_argument_group(f"inversion method {name} (with --method {name}; a spec's [inversion.{name}] table)")
        add_arguments(g, cls)
    common = p.add_argument_group("options of several analyses")
    added: set[str] = set()
    for a in analyses.all_analyses():
        infos = add_arguments(common, a.Options, only={i.name for i in a.option_infos() if i.flag in shared - added},
                              note=lambda i: f" [{', '.join(users[i.flag])}]")
        added |= {i.flag for i in infos if i.flag}

    from .batch_evals import add_eval_arguments  # light: no torch at import

    add_eval_arguments(p)
    from .batch_demo import add_demo_arguments  # light: no torch at import

    add_demo_arguments(p)
    from .batch_sweep import add_sweep_arguments  # light: no torch at import

    add_sweep_arguments(p)

    ui = p.add_argument_group("console")
    ui.add_argument("--runs", metavar="DIR", help="folder of run directories the console browses")
    ui.add_argument("--no-mouse", dest="no_mouse", action="store_true",
                    help="do not capture the mouse (keeps the terminal's own selection and copy)")
    ui.add_argument("--config", metavar="FILE", help="console config file")
    from .config import IMAGE_SETTINGS

    ui.add_argument("--images", choices=IMAGE_SETTINGS, default=None,
                    help="how the item view draws images: auto (real pixels through memtui[images] in a "
                         "terminal with kitty graphics or Sixel, never inside tmux; half-block cells "
                         "otherwise) or halfblock (always); default: the config's images key, else auto")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``memtui`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    if args.batch:
        try:
            from .batch import run_batch
        except KeyboardInterrupt:  # Ctrl-C while the batch runner is still importing
            print("memtui: interrupted before the run started", file=sys.stderr)
            return EXIT_INTERRUPTED
        return run_batch(args)
    try:
        from memtui.app import run_app
    except ImportError as e:
        print(f"memtui: the console is not available ({e}); use --batch for a headless run", file=sys.stderr)
        return EXIT_USAGE
    return int(run_app(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _batch_size(text: str) -> int | str:
    """``--batch-size``: a whole number or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number or 'auto', got {text!r}") from None
