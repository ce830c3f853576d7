"""``memories`` — the paper's image-level analysis (§2), the Sequential Inversion Block: from many
support images, invert the VAE decoder toward one target image, then the diffusion model; many
distinct, likely seeds ("memories") regenerate the same image, at about one distance from its own
seed (the sphere; the paper's CV of those distances is 2% ± 1%).

The headline's and the table's CV is the sphere's: std / mean of the memory -> target-seed
distances (the radii). :func:`sphere_cv` reads it (and the pairwise one) from summaries of both
layouts: since ``cv_pairwise`` exists, ``cv`` is the radii one; a summary with no ``cv_pairwise``
key anywhere was written before, and its ``cv`` keys are the pairwise one (its radii CV per target
is ``memories.cv_to_target``, averaged here over targets)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memtui.engine.analyses.registry import register
from memtui.engine.analyses.base import (RECORD_BASE, SUMMARY_BASE, Analysis, Table, TargetOptions,
                                          error_lines, mean_std, num)
from memtui.engine.core.options import option

SIB_PATHS = ("auto", "reencode", "direct")


def resolve_sib_path(sib_path: str, method: str) -> str:
    """The SIB path a run takes: ``auto`` is ``direct`` for NTI (the official code feeds the
    decoder-inverted latent straight to NTI) and ``reencode`` otherwise (the official ReNoise
    branch); an explicit ``reencode`` / ``direct`` is kept."""
    if sib_path != "auto":
        return sib_path
    return "direct" if method == "nti" else "reencode"


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        return None
    return float(v)


def _mean_std_of(values: list[float | None]) -> dict[str, float | None]:
    a = [v for v in values if v is not None]
    if not a:
        return {"mean": None, "std": None}
    m = sum(a) / len(a)
    return {"mean": m, "std": math.sqrt(sum((v - m) ** 2 for v in a) / len(a))}


def sphere_cv(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The coefficients of variation of a memories summary of either layout:
    ``{"cv": {"mean", "std"}, "cv_pairwise": {"mean", "std"}, "targets": {id: {"cv", "cv_pairwise"}},
    "legacy": bool}``; ``cv`` is std / mean of the memory -> target-seed distances (the sphere's
    radii), ``cv_pairwise`` that of the pairwise memory distances; means and population stds over
    targets; missing or non-finite values are None.

    A summary with a ``cv_pairwise`` key (in ``average`` or a target) holds both as named. One
    without (``legacy``, written before) holds the pairwise CV under ``cv``; its radii CV per target
    is ``memories.cv_to_target`` and the average is recomputed from those."""
    targets = summary.get("targets") if isinstance(summary.get("targets"), Mapping) else {}
    avg = summary.get("average") if isinstance(summary.get("average"), Mapping) else {}

    def mem(f: Any) -> Mapping[str, Any]:
        m = f.get("memories") if isinstance(f, Mapping) else None
        return m if isinstance(m, Mapping) else {}

    legacy = "cv_pairwise" not in avg and not any(
        isinstance(f, Mapping) and ("cv_pairwise" in f or "cv_pairwise" in mem(f)) for f in targets.values())
    per: dict[str, dict[str, float | None]] = {}
    for tid, f in targets.items():
        f = f if isinstance(f, Mapping) else {}
        m = mem(f)
        if legacy:
            radii, pairwise = _finite(m.get("cv_to_target")), _finite(f.get("cv", m.get("cv")))
        else:
            radii, pairwise = _finite(f.get("cv", m.get("cv"))), _finite(f.get("cv_pairwise", m.get("cv_pairwise")))
        per[str(tid)] = {"cv": radii, "cv_pairwise": pairwise}

    def stored(key: str, which: str) -> dict[str, float | None]:
        d = avg.get(key)
        if isinstance(d, Mapping) and _finite(d.get("mean")) is not None:
            return {"mean": _finite(d.get("mean")), "std": _finite(d.get("std"))}
        return _mean_std_of([p[which] for p in per.values()])

    if legacy:
        cv = _mean_std_of([p["cv"] for p in per.values()])
        cv_pairwise = stored("cv", "cv_pairwise")
    else:
        cv, cv_pairwise = stored("cv", "cv"), stored("cv_pairwise", "cv_pairwise")
    return {"cv": cv, "cv_pairwise": cv_pairwise, "targets": per, "legacy": legacy}


@dataclass
class MemoriesOptions(TargetOptions):
    """The SIB settings (``spec.options``); official defaults, smaller ones on the demo world."""

    num_supports: int = option(10, help="support images (memories) per target; target k gets reference items "
                               "offset + stride*k .. + N - 1", minimum=1, demo=10, metavar="N")
    support_offset: int = option(0, help="first reference item used as a support", minimum=0, metavar="K")
    support_stride: int | None = option(None, help="reference items between the supports of consecutive "
                                        "targets (default: --num-supports)", minimum=1, metavar="S")
    vae_steps: int = option(3000, help="Adam steps of each decoder inversion", minimum=0, demo=150, metavar="N")
    vae_lr: float = option(1e-2, help="decoder-inversion learning rate", minimum=0, demo=0.1, metavar="LR")
    loss_weights: tuple[float, float, float] = option((1.0, 0.0, 0.0), help="decoder-inversion loss weights: "
                                                      "MSE, prior, NLL", metavar="W")
    sib_path: str = option("auto", choices=SIB_PATHS, demo="direct",
                           help="auto (direct for --method nti, reencode otherwise, as the official code; "
                                "summary.json's options record the path taken), reencode (official ReNoise "
                                "path: decode, quantise, encode again) or direct (the decoder-inverted latent "
                                "straight into diffusion inversion: the official NTI path, the paper's figure; "
                                "the demo world's default, where re-encoding collapses the memories, see "
                                "docs/sphere.md)")
    decoder_chunk: int | None = option(None, help="items per decoder forward/backward (default: all at once)",
                                       minimum=1, metavar="N")
    targets_together: int | None = option(None, help="targets batched together: their decoder inversions in one "
                                          "Adam run, their diffusion jobs in shared batches (default: as many as "
                                          "fill one batch, batch size // (2 x supports + 1), at least 1; does not "
                                          "change results beyond float rounding)", minimum=1, metavar="K")


@register
class Memories(Analysis):
    name = "memories"
    question = ("The Sequential Inversion Block: many distinct, likely seeds per erased image, on a sphere "
                "around its own seed (memory PSNR, NLL, distances, CV)")
    Options = MemoriesOptions
    non_result_options = ("targets_together",)
    compute = "memtui.engine.compute.memories:run_memories"
    datasets = ("erased", "reference")
    sets = ("target", "memory", "control")
    headline_sets = ("memory",)
    record_keys = RECORD_BASE + ("psnr", "psnr_seed_only", "nll", "nll_parts", "seed_dim", "z_shape", "latents",
                                 "query", "recon", "seed_only", "target_id", "support_id", "psnr_decoder",
                                 "decoder_loss", "decoded", "distance_to_target", "cosine_to_target")
    summary_keys = SUMMARY_BASE + ("method", "steps", "options", "sets", "targets", "average", "d", "normal",
                                   "emd_metric", "cv_definition", "device", "precision", "batch_size",
                                   "image_size", "seed", "inversion", "method_seed", "timing")

    @classmethod
    def headline(cls, summary: Mapping[str, Any]) -> str:
        avg = summary.get("average") or {}
        parts = []
        psnr = (avg.get("memory_psnr") or {}).get("mean")
        cvs = sphere_cv(summary)
        cv, cv_pairwise = cvs["cv"]["mean"], cvs["cv_pairwise"]["mean"]
        if isinstance(psnr, (int, float)):
            parts.append(f"mem. PSNR {psnr:.2f} dB")
        if cv is not None:
            parts.append(f"CV {cv:.3f}")
        elif cv_pairwise is not None:  # a legacy summary without its per-target radii
            parts.append(f"CV pairwise {cv_pairwise:.3f}")
        return "  ".join(parts) or super().headline(summary)

    @classmethod
    def table(cls, summary: Mapping[str, Any], run_dir: Any) -> Table:
        t = Table(title=f"memories · {summary.get('method', '')} · {run_dir}",
                  columns=["target", "n", "PSNR", "seed-only", "decoder", "NLL", "pairwise", "to target",
                           "CV", "CV pairwise"])

        def mean(d: Any) -> Any:
            return d.get("mean") if isinstance(d, Mapping) else None

        cvs = sphere_cv(summary)
        for tid, f in (summary.get("targets") or {}).items():
            m = f.get("memories") or {}
            c = cvs["targets"].get(str(tid)) or {}
            t.rows.append([tid, str(m.get("count", "")), num(mean(m.get("psnr"))), num(mean(m.get("psnr_seed_only"))),
                           num(mean(m.get("psnr_decoder"))), num(mean(m.get("nll")), ".1f"),
                           num(mean(m.get("pairwise_euclidean"))), num(mean(m.get("to_target_euclidean"))),
                           num(c.get("cv"), ".3f"), num(c.get("cv_pairwise"), ".3f")])
        a = summary.get("average") or {}
        law = summary.get("normal") or {}

        def cv_text(d: Mapping[str, Any]) -> str:
            if d.get("mean") is None:
                return "n/a"
            return num(d["mean"], ".3f") + ("" if d.get("std") is None else f" ± {num(d['std'], '.3f')}")

        t.notes += [
            "(means over each target's memories: PSNR dB, NLL nats, Euclidean seed distances; CV: std/mean of "
            "the distances to the target's seed, the sphere's radii; CV pairwise: of the memories' pairwise ones)",
            f"memory PSNR        {mean_std(a.get('memory_psnr'))} dB (seed only "
            f"{mean_std(a.get('memory_psnr_seed_only'))}, decoder only {mean_std(a.get('memory_psnr_decoder'))})",
            f"memory NLL         {mean_std(a.get('memory_nll'), '.1f')} nats "
            f"(N(0,I) law {num(law.get('mean'), '.1f')} ± {num(law.get('std'), '.1f')})",
            f"pairwise distance  {num(a.get('pairwise_euclidean_mean'))} "
            f"(to target {num(a.get('to_target_euclidean_mean'))})",
            f"CV                 {cv_text(cvs['cv'])} (pairwise {cv_text(cvs['cv_pairwise'])})"
            + (" · a run written before cv_pairwise: CV from its cv_to_target" if cvs["legacy"] else ""),
            f"control            PSNR {mean_std(a.get('control_psnr'))} dB, NLL {mean_std(a.get('control_nll'), '.1f')}",
            f"EMD memory–normal  {num(a.get('emd_memory_normal'), '.4g')} nats², "
            f"control–normal {num(a.get('emd_control_normal'), '.4g')}",
        ]
        t.notes += error_lines(summary, run_dir)
        return t
