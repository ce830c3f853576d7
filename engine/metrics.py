"""The paper's metrics: PSNR, seed NLL and its exact law under N(0, I), the official "EMD" (squared
2-Wasserstein between fitted Gaussians), empirical W1, the relative distance, seed distances.

Inputs may be numpy arrays or torch tensors (any device/dtype); arithmetic is float64 numpy.
Units: PSNR in dB; NLL in nats; W2-"EMD" in nats²; W1 in nats; distances in latent units.
Undefined results (empty sets, zero denominators) are ``nan``, never exceptions; JSON writers
should serialise them as ``NaN`` (Python's default) or map them to ``null``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats

LN_2PI = math.log(2.0 * math.pi)

__all__ = [
    "psnr", "psnr_batch", "nll", "nll_law", "nll_law_pdf", "emd_w2_gaussian", "emd_w2_to_law",
    "emd_to_normal", "emd_between",
    "w1_empirical", "w1_to_law", "normal_reference", "relative_distance", "pairwise_distances",
    "offdiag_stats", "distances_to", "coefficient_of_variation", "summarize",
]


def _np64(x: Any) -> np.ndarray:
    """numpy float64 copy of an array-like or torch tensor (detached, on CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().to("cpu").double().numpy()
    return np.asarray(x, dtype=np.float64)


def _finite_1d(x: Any) -> np.ndarray:
    a = _np64(x).reshape(-1)
    return a[np.isfinite(a)]


# ----------------------------------------------------------------------------------------- PSNR
def _uint8_image(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != np.uint8:
        raise TypeError(f"{name} must be a uint8 image, got dtype {arr.dtype}")
    return arr


def psnr(a: Any, b: Any) -> float:
    """PSNR in dB of two uint8 images [H, W, 3] (or any equal shape), as the official code: both
    mapped to [0, 1], MSE over all values, ``10·log10(1/MSE)``. Identical images give ``inf``."""
    x, y = _uint8_image(a, "a"), _uint8_image(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"image shapes differ: {x.shape} vs {y.shape}")
    mse = float(np.mean((x.astype(np.float64) / 255.0 - y.astype(np.float64) / 255.0) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def psnr_batch(a: Any, b: Any) -> np.ndarray:
    """PSNR in dB per item of two uint8 batches [B, H, W, 3] -> float64 [B] (inf where identical)."""
    x, y = _uint8_image(a, "a"), _uint8_image(b, "b")
    if x.shape != y.shape or x.ndim < 2:
        raise ValueError(f"batch shapes differ or too small: {x.shape} vs {y.shape}")
    d = x.astype(np.float64) / 255.0 - y.astype(np.float64) / 255.0
    mse = np.mean(d.reshape(d.shape[0], -1) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return np.where(mse == 0.0, np.inf, -10.0 * np.log10(mse))


# ------------------------------------------------------------------------------------------ NLL
def nll(z: Any) -> np.ndarray:
    """NLL in nats of each item of a batch ``z`` [B, ...] under N(0, I_d), d = prod(shape[1:]):
    ``0.5·||z||² + d/2·ln(2π)`` -> float64 [B]. (4x64x64 seeds: constant 15055.89 nats.)"""
    a = _np64(z)
    if a.ndim < 1:
        raise ValueError("nll expects a batch [B, ...]")
    flat = a.reshape(a.shape[0], -1)
    return 0.5 * np.sum(flat * flat, axis=1) + 0.5 * flat.shape[1] * LN_2PI


def nll_law(d: int) -> tuple[float, float]:
    """(mean, std) in nats of NLL(z) for z ~ N(0, I_d): mean ``d(1+ln 2π)/2``, variance ``d/2``.
    d = 16384 gives (23247.89, 90.51)."""
    return 0.5 * d * (1.0 + LN_2PI), math.sqrt(0.5 * d)


def _law(d: int):
    """Frozen scipy law of NLL for z ~ N(0, I_d): ``d/2·ln 2π + χ²_d / 2``."""
    return stats.chi2(df=d, loc=0.5 * d * LN_2PI, scale=0.5)


def nll_law_pdf(x: Any, d: int) -> np.ndarray:
    """Exact density (per nat) of NLL for z ~ N(0, I_d) at nats ``x`` (for plotting)."""
    return _law(d).pdf(_np64(x))


# -------------------------------------------------------------------------------- Wasserstein
def _moments(x: Any) -> tuple[float, float, int]:
    a = _finite_1d(x)
    if a.size == 0:
        return math.nan, math.nan, 0
    return float(a.mean()), float(a.std()), int(a.size)


def emd_w2_gaussian(x: Any, y: Any) -> float:
    """The official "EMD" in nats²: squared 2-Wasserstein distance between 1-D Gaussians fitted to
    the samples (mean, population variance): ``(μx−μy)² + (σx−σy)²``. Non-finite values are
    ignored; nan if either set is empty."""
    mx, sx, _ = _moments(x)
    my, sy, _ = _moments(y)
    return (mx - my) ** 2 + (sx - sy) ** 2


def emd_w2_to_law(x: Any, mean: float, std: float) -> float:
    """Squared W2 in nats² between the Gaussian fitted to ``x`` and N(mean, std²)."""
    mx, sx, _ = _moments(x)
    return (mx - mean) ** 2 + (sx - std) ** 2


def w1_empirical(x: Any, y: Any) -> float:
    """Empirical 1-Wasserstein distance in nats (``scipy.stats.wasserstein_distance``); nan if a
    set is empty. Non-finite values are ignored."""
    a, b = _finite_1d(x), _finite_1d(y)
    if a.size == 0 or b.size == 0:
        return math.nan
    return float(stats.wasserstein_distance(a, b))


def w1_to_law(x: Any, d: int) -> float:
    """1-Wasserstein distance in nats between the empirical law of ``x`` and the exact NLL law of
    N(0, I_d) seeds, computed in closed form (no sampling, no quadrature):

    ``W1 = ∫_0^1 |Q_emp(u) − Q(u)| du = Σ_k ∫_{(k-1)/n}^{k/n} |x_(k) − Q(u)| du``. Each piece splits at
    u* = F(x_(k)) and uses ``G(u) = ∫_0^u Q = c·u + (d/2)·F_{χ²_{d+2}}(Q_{χ²_d}(u))`` (the partial
    expectation of χ²_d is d·F_{χ²_{d+2}}), c = d/2·ln 2π. nan for an empty sample."""
    a = np.sort(_finite_1d(x))
    n = a.size
    if n == 0:
        return math.nan
    c = 0.5 * d * LN_2PI
    chi_d, chi_d2 = stats.chi2(df=d), stats.chi2(df=d + 2)

    def G(u: np.ndarray) -> np.ndarray:
        return c * u + 0.5 * d * chi_d2.cdf(chi_d.ppf(u))

    lo = np.arange(n, dtype=np.float64) / n
    hi = np.arange(1, n + 1, dtype=np.float64) / n
    us = np.clip(chi_d.cdf(2.0 * (a - c)), lo, hi)
    g_lo, g_hi, g_s = G(lo), G(hi), G(us)
    below = a * (us - lo) - (g_s - g_lo)   # x ≥ Q(u) on [lo, u*]
    above = (g_hi - g_s) - a * (hi - us)   # x ≤ Q(u) on [u*, hi]
    return float(np.sum(np.maximum(below, 0.0) + np.maximum(above, 0.0)))


def emd_to_normal(x: Any, normal: Mapping[str, Any], metric: Literal["w2", "w1"] = "w2") -> float:
    """Distance between the NLLs ``x`` and "normal" (a ``normal_reference`` dict): ``w2`` the
    official squared W2 of fitted Gaussians (nats²); ``w1`` the empirical W1 (nats) to the exact law
    (``w1_to_law``) or, when ``normal`` holds ``samples``, to those samples. nan for an empty set."""
    if metric == "w2":
        return emd_w2_to_law(x, normal["mean"], normal["std"])
    if metric == "w1":
        samples = normal.get("samples")
        return w1_to_law(x, int(normal["d"])) if samples is None else w1_empirical(x, samples)
    raise ValueError(f"metric must be 'w2' or 'w1', got {metric!r}")


def emd_between(x: Any, y: Any, metric: Literal["w2", "w1"] = "w2") -> float:
    """Distance between two NLL sets: ``w2`` (nats², fitted Gaussians) or ``w1`` (nats, empirical)."""
    if metric == "w2":
        return emd_w2_gaussian(x, y)
    if metric == "w1":
        return w1_empirical(x, y)
    raise ValueError(f"metric must be 'w2' or 'w1', got {metric!r}")


# ---------------------------------------------------------------------------- relative distance
def normal_reference(d: int, mode: Literal["exact", "samples"] = "exact", n: int = 50,
                     seed: int = 0) -> dict[str, Any]:
    """How "normal" NLLs are defined. ``exact``: the law of NLL for z ~ N(0, I_d) (deterministic;
    n and seed are None). ``samples``: NLLs of ``n`` draws ``torch.randn(n, d)`` from a generator
    seeded with ``seed`` (the official code drew 50 unseeded ones); then ``samples`` (float64 [n])
    is added and mean/std are the samples' (population std). All other keys are JSON-serialisable."""
    if mode == "exact":
        mean, std = nll_law(d)
        return {"mode": "exact", "d": int(d), "n": None, "seed": None, "mean": mean, "std": std}
    if mode != "samples":
        raise ValueError(f"normal mode must be 'exact' or 'samples', got {mode!r}")
    import torch

    g = torch.Generator().manual_seed(int(seed))
    samples = nll(torch.randn(int(n), int(d), generator=g))
    return {"mode": "samples", "d": int(d), "n": int(n), "seed": int(seed),
            "mean": float(samples.mean()), "std": float(samples.std()), "samples": samples}


def relative_distance(erased_nll: Any, reference_nll: Any, d: int,
                      normal: Literal["exact", "samples"] = "exact", n: int = 50, seed: int = 0,
                      metric: Literal["w2", "w1"] = "w2") -> dict[str, Any]:
    """The three distances between the erased-concept seeds' NLLs, the reference (e.g. COCO) seeds'
    NLLs and "normal" (``normal_reference``), and the paper's ratio.

    metric ``w2``: the official squared-W2 "EMD" of fitted Gaussians (nats²); ``w1``: empirical W1
    (nats; to the exact law via ``w1_to_law``). Returns ``erased_normal``, ``reference_normal``,
    ``erased_reference``, ``relative_distance`` = erased_normal / reference_normal,
    ``relative_distance_er`` = erased_reference / reference_normal, ``metric``, ``normal`` (its
    description without samples), ``n_erased``/``n_reference`` (finite values used) and ``reasons``
    (why any value is nan; empty list when all are defined). Sets need ≥ 2 finite values."""
    if metric not in ("w2", "w1"):
        raise ValueError(f"metric must be 'w2' or 'w1', got {metric!r}")
    ref = normal_reference(d, normal, n, seed)
    e, r = _finite_1d(erased_nll), _finite_1d(reference_nll)
    reasons: list[str] = []
    for name, s in (("erased", e), ("reference", r)):
        if s.size < 2:
            reasons.append(f"{name} set has {s.size} finite NLL value(s); at least 2 are needed")

    en = emd_to_normal(e, ref, metric) if e.size >= 2 else math.nan
    rn = emd_to_normal(r, ref, metric) if r.size >= 2 else math.nan
    er = emd_between(e, r, metric) if e.size >= 2 and r.size >= 2 else math.nan
    ref.pop("samples", None)
    if rn == 0.0:
        reasons.append("reference_normal is 0: the ratio is undefined")
        rd = rd_er = math.nan
    else:
        rd, rd_er = en / rn, er / rn
    return {"erased_normal": en, "reference_normal": rn, "erased_reference": er,
            "relative_distance": rd, "relative_distance_er": rd_er, "metric": metric,
            "normal": ref, "n_erased": int(e.size), "n_reference": int(r.size), "reasons": reasons}


# ------------------------------------------------------------------------------ seed distances
def _flat(Z: Any) -> np.ndarray:
    a = _np64(Z)
    return a.reshape(a.shape[0], -1)


def pairwise_distances(Z: Any) -> tuple[np.ndarray, np.ndarray]:
    """Seeds ``Z`` [N, ...] flattened to [N, d] -> (Euclidean [N, N], cosine distance
    ``1 − cos`` [N, N]); diagonals are exactly 0. Cosine with a zero vector is nan."""
    a = _flat(Z)
    gram = a @ a.T
    sq = np.diag(gram).copy()
    euc = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0))
    norms = np.sqrt(sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = 1.0 - gram / (norms[:, None] * norms[None, :])
    np.fill_diagonal(euc, 0.0)
    np.fill_diagonal(cos, np.where(norms > 0, 0.0, np.nan))
    return euc, cos


def offdiag_stats(M: Any) -> tuple[float, float]:
    """(mean, population std) over the pairs i < j of a square matrix; nan for N < 2."""
    m = _np64(M)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {m.shape}")
    vals = m[np.triu_indices(m.shape[0], k=1)]
    if vals.size == 0:
        return math.nan, math.nan
    return float(vals.mean()), float(vals.std())


def distances_to(Z: Any, target: Any, metric: Literal["euclidean", "cosine"] = "euclidean"
                 ) -> np.ndarray:
    """Distance of each seed of ``Z`` [N, ...] to ``target`` (same per-item shape) -> float64 [N]:
    Euclidean (default) or cosine distance ``1 − cos``."""
    a = _flat(Z)
    t = _np64(target).reshape(-1)
    if t.size != a.shape[1]:
        raise ValueError(f"target has {t.size} values, seeds have {a.shape[1]}")
    if metric == "euclidean":
        return np.sqrt(np.sum((a - t) ** 2, axis=1))
    if metric == "cosine":
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 - (a @ t) / (np.linalg.norm(a, axis=1) * np.linalg.norm(t))
    raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")


def coefficient_of_variation(x: Any) -> float:
    """std / mean (population std) of the finite values of ``x``; nan if empty or mean is 0."""
    a = _finite_1d(x)
    if a.size == 0 or a.mean() == 0.0:
        return math.nan
    return float(a.std() / a.mean())


def summarize(values: Iterable[float] | Sequence[float] | Any) -> dict[str, float | int]:
    """count, mean, std (population), min, max, median of the *finite* values; non-finite ones
    (e.g. PSNR = inf for identical images, nan for failures) are excluded and counted in
    ``n_nonfinite``. Statistics of an empty set are nan."""
    a = _np64(list(values) if not hasattr(values, "shape") else values).reshape(-1)
    fin = a[np.isfinite(a)]
    out: dict[str, float | int] = {"count": int(fin.size), "n_nonfinite": int(a.size - fin.size)}
    if fin.size == 0:
        out.update(mean=math.nan, std=math.nan, min=math.nan, max=math.nan, median=math.nan)
    else:
        out.update(mean=float(fin.mean()), std=float(fin.std()), min=float(fin.min()),
                   max=float(fin.max()), median=float(np.median(fin)))
    return out
