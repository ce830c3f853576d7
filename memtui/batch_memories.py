"""Flags and final printout of the image-level analyses (``--analysis memories`` / ``scramble``) for
``memtui --batch``. The flags fill ``spec.options`` (see ``memtui.engine.compute.memories`` and
``.scramble``); only flags actually given override a spec file or a stored run's spec. Never imports
torch at import time.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

# flag dest -> spec.options key
OPTION_FLAGS: dict[str, str] = {
    "targets": "targets", "num_targets": "num_targets", "num_supports": "num_supports",
    "support_offset": "support_offset", "vae_steps": "vae_steps", "vae_lr": "vae_lr",
    "sib_path": "sib_path", "grid": "grid", "num_scrambles": "num_scrambles", "perm_seed": "perm_seed",
}


def add_memories_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``memories / scramble`` flag group."""
    g = p.add_argument_group("memories / scramble (with --analysis memories|scramble)")
    g.add_argument("--targets", type=int, nargs="+", metavar="I",
                   help="erased-set indices of the target images (default: the first --num-targets)")
    g.add_argument("--num-targets", dest="num_targets", type=int, metavar="N",
                   help="number of target images (default 5; 3 with --demo)")
    g.add_argument("--num-supports", dest="num_supports", type=int, metavar="N",
                   help="support images (memories) per target (default 10; 5 with --demo); target k gets "
                        "reference items N*k .. N*k+N-1")
    g.add_argument("--support-offset", dest="support_offset", type=int, metavar="K",
                   help="first reference item used as a support (default 0)")
    g.add_argument("--vae-steps", dest="vae_steps", type=int, metavar="N",
                   help="Adam steps of each decoder inversion (default 3000; 150 with --demo)")
    g.add_argument("--vae-lr", dest="vae_lr", type=float, metavar="LR", help="decoder-inversion learning rate (0.01; 0.1 with --demo)")
    g.add_argument("--sib-path", dest="sib_path", choices=("reencode", "direct"),
                   help="reencode (official: decode, quantise, encode again) or direct (the decoder-inverted "
                        "latent straight into diffusion inversion, the paper's figure)")
    g.add_argument("--grid", type=int, metavar="G", help="scramble: G x G patches (default 4)")
    g.add_argument("--num-scrambles", dest="num_scrambles", type=int, metavar="N",
                   help="scramble: shuffles per image (default 1)")
    g.add_argument("--perm-seed", dest="perm_seed", type=int, metavar="S",
                   help="scramble: seed of the first permutation (default 0)")


def apply_memories_flags(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """Copy the given memories/scramble flags into ``data["options"]``."""
    given = {key: getattr(args, dest) for dest, key in OPTION_FLAGS.items() if getattr(args, dest, None) is not None}
    if given:
        data["options"] = {**(data.get("options") or {}), **given}


def _n(v: Any, fmt: str = ".2f") -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, fmt)


def _ms(d: Any, fmt: str = ".2f") -> str:
    if not isinstance(d, dict):
        return "n/a"
    if d.get("count") == 1:  # a single value has no spread worth printing
        return _n(d.get("mean"), fmt)
    return f"{_n(d.get('mean'), fmt)} ± {_n(d.get('std'), fmt)}"


def print_image_level(summary: dict[str, Any], run_dir: Path) -> None:
    """Final tables of a memories or scramble run, on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    analysis = summary.get("analysis")
    law = summary.get("normal") or {}
    if analysis == "memories":
        t = Table(title=f"memories · {summary.get('method', '')} · {run_dir}")
        for col in ("target", "n", "PSNR", "decoder", "NLL", "pairwise", "to target", "CV"):
            t.add_column(col, justify="left" if col == "target" else "right", overflow="fold")
        mean = lambda d: d.get("mean") if isinstance(d, dict) else None  # noqa: E731
        for tid, f in (summary.get("targets") or {}).items():
            m = f.get("memories") or {}
            t.add_row(tid, str(m.get("count", "")), _n(mean(m.get("psnr"))), _n(mean(m.get("psnr_decoder"))),
                      _n(mean(m.get("nll")), ".1f"), _n(mean(m.get("pairwise_euclidean"))),
                      _n(mean(m.get("to_target_euclidean"))), _n(f.get("cv"), ".3f"))
        console.print(t)
        console.print("(means over each target's memories: PSNR dB, NLL nats, Euclidean seed distances)")
        a = summary.get("average") or {}
        console.print(f"memory PSNR        {_ms(a.get('memory_psnr'))} dB (decoder only "
                      f"{_ms(a.get('memory_psnr_decoder'))})")
        console.print(f"memory NLL         {_ms(a.get('memory_nll'), '.1f')} nats "
                      f"(N(0,I) law {_n(law.get('mean'), '.1f')} ± {_n(law.get('std'), '.1f')})")
        console.print(f"pairwise distance  {_n(a.get('pairwise_euclidean_mean'))} "
                      f"(to target {_n(a.get('to_target_euclidean_mean'))}), CV {_ms(a.get('cv'), '.3f')}")
        console.print(f"control            PSNR {_ms(a.get('control_psnr'))} dB, NLL {_ms(a.get('control_nll'), '.1f')}")
        console.print(f"EMD memory–normal  {_n(a.get('emd_memory_normal'), '.4g')} nats², "
                      f"control–normal {_n(a.get('emd_control_normal'), '.4g')}")
    else:
        t = Table(title=f"scramble · grid {(summary.get('options') or {}).get('grid')} · {run_dir}")
        for col in ("image", "NLL", "NLL scrambled", "increase", "PSNR", "PSNR scr."):
            t.add_column(col, justify="left" if col == "image" else "right", overflow="fold")
        for tid, f in (summary.get("targets") or {}).items():
            t.add_row(tid, _n(f.get("original_nll"), ".1f"), _ms(f.get("scrambled_nll"), ".1f"),
                      _ms(f.get("nll_increase"), ".1f"), _n(f.get("original_psnr")),
                      _n((f.get("scrambled_psnr") or {}).get("mean")))
        console.print(t)
        console.print(f"NLL increase {_ms(summary.get('nll_increase'), '.1f')} nats; scrambles with a less likely "
                      f"seed: {_n(100 * summary['fraction_less_likely'] if isinstance(summary.get('fraction_less_likely'), (int, float)) else None, '.0f')}%")
    if summary.get("errors"):
        console.print(f"{len(summary['errors'])} item(s) in error (see {run_dir / 'summary.json'})")
