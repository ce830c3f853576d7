"""``memories`` — the paper's image-level analysis (§2), the Sequential Inversion Block: from many
support images, invert the VAE decoder toward one target image, then the diffusion model; many
distinct, likely seeds ("memories") regenerate the same image, at about one distance from its own
seed (the sphere; the paper's CV of those distances is 2% ± 1%)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memtui.engine.analyses.registry import register
from memtui.engine.analyses.base import (RECORD_BASE, SUMMARY_BASE, Analysis, Table, TargetOptions,
                                          error_lines, mean_std, num)
from memtui.engine.core.options import option

SIB_PATHS = ("reencode", "direct")


@dataclass
class MemoriesOptions(TargetOptions):
    """The SIB settings (``spec.options``); official defaults, smaller ones on the demo world."""

    num_supports: int = option(10, help="support images (memories) per target; target k gets reference items "
                               "offset + stride*k .. + N - 1", minimum=1, demo=5, metavar="N")
    support_offset: int = option(0, help="first reference item used as a support", minimum=0, metavar="K")
    support_stride: int | None = option(None, help="reference items between the supports of consecutive "
                                        "targets (default: --num-supports)", minimum=1, metavar="S")
    vae_steps: int = option(3000, help="Adam steps of each decoder inversion", minimum=0, demo=150, metavar="N")
    vae_lr: float = option(1e-2, help="decoder-inversion learning rate", minimum=0, demo=0.1, metavar="LR")
    loss_weights: tuple[float, float, float] = option((1.0, 0.0, 0.0), help="decoder-inversion loss weights: "
                                                      "MSE, prior, NLL", metavar="W")
    sib_path: str = option("reencode", choices=SIB_PATHS,
                           help="reencode (official: decode, quantise, encode again) or direct (the decoder-"
                                "inverted latent straight into diffusion inversion, the paper's figure)")
    decoder_chunk: int | None = option(None, help="items per decoder forward/backward (default: all at once)",
                                       minimum=1, metavar="N")


@register
class Memories(Analysis):
    name = "memories"
    question = ("The Sequential Inversion Block: many distinct, likely seeds per erased image, on a sphere "
                "around its own seed (memory PSNR, NLL, distances, CV)")
    Options = MemoriesOptions
    compute = "memtui.engine.compute.memories:run_memories"
    datasets = ("erased", "reference")
    sets = ("target", "memory", "control")
    headline_sets = ("memory",)
    record_keys = RECORD_BASE + ("psnr", "nll", "z_shape", "latents", "query", "recon", "target_id",
                                 "support_id", "psnr_decoder", "decoder_loss", "decoded",
                                 "distance_to_target", "cosine_to_target")
    summary_keys = SUMMARY_BASE + ("method", "steps", "options", "sets", "targets", "average", "d", "normal",
                                   "emd_metric", "cv_definition", "device", "precision", "batch_size",
                                   "image_size", "seed", "inversion", "timing")

    @classmethod
    def headline(cls, summary: Mapping[str, Any]) -> str:
        avg = summary.get("average") or {}
        parts = []
        psnr = (avg.get("memory_psnr") or {}).get("mean")
        cv = (avg.get("cv") or {}).get("mean")
        if isinstance(psnr, (int, float)):
            parts.append(f"mem. PSNR {psnr:.2f} dB")
        if isinstance(cv, (int, float)):
            parts.append(f"CV {cv:.3f}")
        return "  ".join(parts) or super().headline(summary)

    @classmethod
    def table(cls, summary: Mapping[str, Any], run_dir: Any) -> Table:
        t = Table(title=f"memories · {summary.get('method', '')} · {run_dir}",
                  columns=["target", "n", "PSNR", "decoder", "NLL", "pairwise", "to target", "CV"])

        def mean(d: Any) -> Any:
            return d.get("mean") if isinstance(d, Mapping) else None

        for tid, f in (summary.get("targets") or {}).items():
            m = f.get("memories") or {}
            t.rows.append([tid, str(m.get("count", "")), num(mean(m.get("psnr"))), num(mean(m.get("psnr_decoder"))),
                           num(mean(m.get("nll")), ".1f"), num(mean(m.get("pairwise_euclidean"))),
                           num(mean(m.get("to_target_euclidean"))), num(f.get("cv"), ".3f")])
        a = summary.get("average") or {}
        law = summary.get("normal") or {}
        t.notes += [
            "(means over each target's memories: PSNR dB, NLL nats, Euclidean seed distances)",
            f"memory PSNR        {mean_std(a.get('memory_psnr'))} dB (decoder only "
            f"{mean_std(a.get('memory_psnr_decoder'))})",
            f"memory NLL         {mean_std(a.get('memory_nll'), '.1f')} nats "
            f"(N(0,I) law {num(law.get('mean'), '.1f')} ± {num(law.get('std'), '.1f')})",
            f"pairwise distance  {num(a.get('pairwise_euclidean_mean'))} "
            f"(to target {num(a.get('to_target_euclidean_mean'))}), CV {mean_std(a.get('cv'), '.3f')}",
            f"control            PSNR {mean_std(a.get('control_psnr'))} dB, NLL {mean_std(a.get('control_nll'), '.1f')}",
            f"EMD memory–normal  {num(a.get('emd_memory_normal'), '.4g')} nats², "
            f"control–normal {num(a.get('emd_control_normal'), '.4g')}",
        ]
        t.notes += error_lines(summary, run_dir)
        return t
