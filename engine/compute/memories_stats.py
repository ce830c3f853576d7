"""Figures of the image-level analysis (spec §2, §0.5) from per-item records and seeds.

A seed is the inversion method's whole seed: its parts (``seed_parts``: ``z_T``, then e.g. EDICT's
``y_T``) flattened and concatenated in order (for one-part methods, ``z_T`` flattened); every
distance below is between such vectors.

Per target: PSNR (diffusion reconstruction, seed-only reconstruction and decoder-only) and NLL of
its N memories and of the control group; Euclidean and cosine distances among the memories
(mean/std over the pairs i < j); distance of each memory to the target's own seed (mean/std over
the N memories); the coefficients of variation; EMDs (official squared W2 of fitted Gaussians,
nats²) to "normal" N(0, I) seed NLLs.

Coefficient of variation (not computed by the official code): ``cv`` = population std / mean of the
N memory -> target-seed Euclidean distances, the radii of the sphere around the target's own seed
(the paper's Figure 6: 2.72 / 152.14 ≈ 2 %). ``cv_pairwise`` = the same over the N(N-1)/2 pairwise
Euclidean distances among the memory seeds (also given for the control group). Over targets, the
mean and population std of each. Summaries written before this rule (no ``cv_pairwise`` key) hold
the pairwise one under ``cv`` and the radii one under ``memories.cv_to_target``;
:func:`memtui.engine.analyses.memories.sphere_cv` reads both layouts.

Everything returned is JSON-ready: non-finite floats become ``None``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from memtui.engine import metrics


def clean(x: Any) -> Any:
    """Recursively turn numpy scalars/arrays into Python types and non-finite floats into None."""
    if isinstance(x, Mapping):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return clean(x.tolist())
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _mean_std(values: Any) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"mean": math.nan, "std": math.nan}
    return {"mean": float(a.mean()), "std": float(a.std())}


def _field(recs: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([math.nan if r.get(key) is None else float(r[key]) for r in recs], dtype=np.float64)


def group_figures(recs: Sequence[Mapping[str, Any]], seeds: np.ndarray | None,
                  normal: Mapping[str, Any], metric: str = "w2") -> dict[str, Any]:
    """Figures of one group of seeds (a target's memories, or its control group).

    recs: the group's result records (``psnr``, ``psnr_seed_only``, ``psnr_decoder``, ``nll``);
    seeds: ``[N, ...]`` their seeds (vectors of all seed parts) in record order (None if
    unavailable); normal: ``metrics.normal_reference`` (with its ``samples`` in samples mode);
    metric: ``w2`` or ``w1`` (``metrics.emd_to_normal``). ``cv_pairwise``: std / mean of the pairwise
    Euclidean distances.
    """
    nll = _field(recs, "nll")
    out: dict[str, Any] = {
        "count": len(recs),
        "psnr": metrics.summarize(_field(recs, "psnr")),
        "psnr_seed_only": metrics.summarize(_field(recs, "psnr_seed_only")),
        "psnr_decoder": metrics.summarize(_field(recs, "psnr_decoder")),
        "nll": metrics.summarize(nll),
        "emd_normal": metrics.emd_to_normal(nll, normal, metric),
    }
    if seeds is not None and len(seeds) >= 2:
        euc, cos = metrics.pairwise_distances(seeds)
        e_mean, e_std = metrics.offdiag_stats(euc)
        c_mean, c_std = metrics.offdiag_stats(cos)
        pairs = euc[np.triu_indices(len(seeds), k=1)]
        out.update(pairwise_euclidean={"mean": e_mean, "std": e_std},
                   pairwise_cosine={"mean": c_mean, "std": c_std},
                   cv_pairwise=metrics.coefficient_of_variation(pairs))
    else:
        nan2 = {"mean": math.nan, "std": math.nan}
        out.update(pairwise_euclidean=nan2, pairwise_cosine=dict(nan2), cv_pairwise=math.nan)
    return out


def target_figures(target_rec: Mapping[str, Any] | None, target_seed: np.ndarray | None,
                   memory_recs: Sequence[Mapping[str, Any]], memory_seeds: np.ndarray | None,
                   control_recs: Sequence[Mapping[str, Any]], control_seeds: np.ndarray | None,
                   normal: Mapping[str, Any], metric: str = "w2") -> dict[str, Any]:
    """All figures of one target (see module docstring). Seeds are ``[N, ...]`` arrays of seed
    vectors in the order of their records; ``target_seed`` is the target's own (same size per item).
    ``cv`` (top level and in ``memories``) = std / mean of the memory -> target-seed Euclidean
    distances; ``cv_pairwise`` = the memories' pairwise one."""
    mem = group_figures(memory_recs, memory_seeds, normal, metric)
    ctl = group_figures(control_recs, control_seeds, normal, metric)
    if memory_seeds is not None and target_seed is not None and len(memory_seeds):
        d_euc = metrics.distances_to(memory_seeds, target_seed, "euclidean")
        d_cos = metrics.distances_to(memory_seeds, target_seed, "cosine")
        mem.update(to_target_euclidean=_mean_std(d_euc), to_target_cosine=_mean_std(d_cos),
                   cv=metrics.coefficient_of_variation(d_euc))
    else:
        nan2 = {"mean": math.nan, "std": math.nan}
        mem.update(to_target_euclidean=nan2, to_target_cosine=dict(nan2), cv=math.nan)
    m_nll, c_nll = _field(memory_recs, "nll"), _field(control_recs, "nll")
    tr = target_rec or {}
    return clean({
        "target": {"psnr": tr.get("psnr"), "psnr_decoder": tr.get("psnr_decoder"), "nll": tr.get("nll"),
                   "status": tr.get("status")},
        "memories": mem,
        "control": ctl,
        "cv": mem["cv"],
        "cv_pairwise": mem["cv_pairwise"],
        "emd": {"memory_normal": mem["emd_normal"], "control_normal": ctl["emd_normal"],
                "memory_control": metrics.emd_between(m_nll, c_nll, metric)},
        "support_ids": [r.get("support_id") for r in memory_recs],
    })


def _get(d: Mapping[str, Any], *path: str) -> float:
    for p in path:
        if not isinstance(d, Mapping) or d.get(p) is None:
            return math.nan
        d = d[p]
    return float(d)


def average_figures(per_target: Mapping[str, Mapping[str, Any]], memory_recs: Sequence[Mapping[str, Any]],
                    control_recs: Sequence[Mapping[str, Any]], normal: Mapping[str, Any],
                    metric: str = "w2") -> dict[str, Any]:
    """The official ``"average"`` entry: PSNR/NLL pooled over all memories (and controls); the mean
    over targets of each target's mean pairwise distances, mean distance to the target seed and
    EMDs; plus mean/std over targets of ``cv`` (radii) and ``cv_pairwise``, and the EMD of all
    memory NLLs pooled."""
    figs = list(per_target.values())

    def over(*path: str) -> float:
        vals = np.array([_get(f, *path) for f in figs], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        return float(vals.mean()) if vals.size else math.nan

    cvs = np.array([_get(f, "cv") for f in figs], dtype=np.float64)
    cvs_pairwise = np.array([_get(f, "cv_pairwise") for f in figs], dtype=np.float64)
    m_nll = _field(memory_recs, "nll")
    return clean({
        "n_targets": len(figs),
        "memory_psnr": metrics.summarize(_field(memory_recs, "psnr")),
        "memory_psnr_seed_only": metrics.summarize(_field(memory_recs, "psnr_seed_only")),
        "memory_psnr_decoder": metrics.summarize(_field(memory_recs, "psnr_decoder")),
        "memory_nll": metrics.summarize(m_nll),
        "control_psnr": metrics.summarize(_field(control_recs, "psnr")),
        "control_nll": metrics.summarize(_field(control_recs, "nll")),
        "pairwise_euclidean_mean": over("memories", "pairwise_euclidean", "mean"),
        "pairwise_cosine_mean": over("memories", "pairwise_cosine", "mean"),
        "to_target_euclidean_mean": over("memories", "to_target_euclidean", "mean"),
        "to_target_cosine_mean": over("memories", "to_target_cosine", "mean"),
        "cv": _mean_std(cvs),
        "cv_pairwise": _mean_std(cvs_pairwise),
        "emd_memory_normal": over("emd", "memory_normal"),
        "emd_control_normal": over("emd", "control_normal"),
        "emd_memory_control": over("emd", "memory_control"),
        "emd_memory_normal_pooled": metrics.emd_to_normal(m_nll, normal, metric),
    })
