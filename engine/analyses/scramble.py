"""``scramble`` — the patch-shuffle test of the paper's limitations section: shuffle an image's
patches, invert, reassemble; an unnatural image gets a less likely seed (higher NLL)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memtui.engine.analyses.registry import register
from memtui.engine.analyses.base import (RECORD_BASE, SUMMARY_BASE, Analysis, Table, TargetOptions,
                                          error_lines, mean_std, num, seed_lines)
from memtui.engine.core.options import option


@dataclass
class ScrambleOptions(TargetOptions):
    """Which images, how finely and how often they are shuffled."""

    grid: int = option(4, help="G x G patches (the image side must be divisible by G)", minimum=2, metavar="G")
    num_scrambles: int = option(1, help="shuffles per image", minimum=1, metavar="N")
    perm_seed: int = option(0, help="seed of the first permutation (shuffle j uses seed + j)", minimum=0,
                            metavar="S")


@register
class Scramble(Analysis):
    name = "scramble"
    question = "Shuffle each image's patches, invert, reassemble: does an unnatural image get a less likely seed?"
    Options = ScrambleOptions
    compute = "memtui.engine.compute.scramble:run_scramble"
    datasets = ("erased",)
    sets = ("target", "scramble")
    headline_sets = ("target",)
    record_keys = RECORD_BASE + ("psnr", "psnr_seed_only", "nll", "nll_parts", "seed_dim", "seed_only", "z_shape", "latents", "query", "recon", "target_id", "grid",
                                 "perm", "perm_seed", "psnr_reassembled", "reassembled")
    summary_keys = SUMMARY_BASE + ("method", "steps", "method_seed", "options", "sets", "targets", "nll_increase",
                                   "fraction_less_likely", "d", "normal", "device", "precision", "batch_size",
                                   "image_size", "seed", "inversion", "timing")

    @classmethod
    def headline(cls, summary: Mapping[str, Any]) -> str:
        inc = summary.get("nll_increase")
        if isinstance(inc, Mapping) and isinstance(inc.get("mean"), (int, float)):
            return f"NLL +{inc['mean']:.1f} scrambled"
        return super().headline(summary)

    @classmethod
    def table(cls, summary: Mapping[str, Any], run_dir: Any) -> Table:
        t = Table(title=f"scramble · grid {(summary.get('options') or {}).get('grid')} · {run_dir}",
                  columns=["image", "NLL", "NLL scrambled", "increase", "PSNR", "seed-only", "PSNR scr."])
        for tid, f in (summary.get("targets") or {}).items():
            t.rows.append([tid, num(f.get("original_nll"), ".1f"), mean_std(f.get("scrambled_nll"), ".1f"),
                           mean_std(f.get("nll_increase"), ".1f"), num(f.get("original_psnr")),
                           num(f.get("original_psnr_seed_only")), num((f.get("scrambled_psnr") or {}).get("mean"))])
        frac = summary.get("fraction_less_likely")
        t.notes.append(f"NLL increase {mean_std(summary.get('nll_increase'), '.1f')} nats; scrambles with a less "
                       f"likely seed: {num(100 * frac if isinstance(frac, (int, float)) else None, '.0f')}%")
        t.notes += seed_lines(summary) + error_lines(summary, run_dir)
        return t
