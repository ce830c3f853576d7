"""memtui.engine.metrics against independent computations (scipy, hand-written formulas)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.spatial.distance import cdist

from memtui.engine import metrics as m

pytestmark = pytest.mark.usefixtures("_one_thread")  # single-threaded torch: see tests/conftest.py


def test_psnr_hand_computation() -> None:
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # one value off by 1.0 in [0, 1] units out of 12
    assert m.psnr(a, b) == pytest.approx(10 * math.log10(12.0))
    assert m.psnr(a, a) == math.inf
    c = np.full((4, 4, 3), 100, np.uint8)
    d = np.full((4, 4, 3), 110, np.uint8)
    assert m.psnr(c, d) == pytest.approx(-10 * math.log10((10 / 255) ** 2))
    batch = m.psnr_batch(np.stack([a, a]), np.stack([b, a]))
    assert batch[0] == pytest.approx(10 * math.log10(12.0)) and batch[1] == math.inf
    with pytest.raises(TypeError):
        m.psnr(a.astype(np.float32), a)
    with pytest.raises(ValueError):
        m.psnr(a, np.zeros((2, 3, 3), np.uint8))


def test_nll_matches_scipy_logpdf_torch_and_numpy() -> None:
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = -stats.norm.logpdf(z.double().numpy().reshape(3, -1)).sum(axis=1)
    np.testing.assert_allclose(m.nll(z), ref, rtol=1e-12)
    np.testing.assert_allclose(m.nll(z.numpy()), ref, rtol=1e-7)
    assert m.nll(z).dtype == np.float64 and m.nll(z).shape == (3,)


def test_nll_law_formula_samples_and_paper_numbers() -> None:
    d = 256
    mean, std = m.nll_law(d)
    chi_mean, chi_var = stats.chi2(d).stats(moments="mv")
    assert mean == pytest.approx(d / 2 * math.log(2 * math.pi) + chi_mean / 2)
    assert std ** 2 == pytest.approx(chi_var / 4)
    s = m.nll(np.random.default_rng(0).standard_normal((20000, d)))
    assert s.mean() == pytest.approx(mean, abs=4 * std / math.sqrt(20000))
    assert s.std() == pytest.approx(std, rel=0.03)
    big_mean, big_std = m.nll_law(16384)
    assert big_mean == pytest.approx(23247.9, abs=0.05) and big_std == pytest.approx(90.5, abs=0.05)
    # density integrates to 1 and has the law's mean
    x = np.linspace(mean - 12 * std, mean + 12 * std, 4001)
    pdf = m.nll_law_pdf(x, d)
    assert np.trapezoid(pdf, x) == pytest.approx(1.0, abs=1e-6)
    assert np.trapezoid(x * pdf, x) == pytest.approx(mean, rel=1e-9)


def _exact_moment_sample(mu: float, sigma: float, n: int = 1000) -> np.ndarray:
    z = np.random.default_rng(3).standard_normal(n)
    z = (z - z.mean()) / z.std()
    return mu + sigma * z


def test_emd_w2_known_gaussians() -> None:
    x, y = _exact_moment_sample(0.0, 1.0), _exact_moment_sample(3.0, 2.0)
    assert m.emd_w2_gaussian(x, y) == pytest.approx(10.0)
    assert m.emd_w2_to_law(x, 3.0, 2.0) == pytest.approx(10.0)
    # the official form μ-diff² + v1 + v2 − 2√(v1 v2)
    v1, v2 = np.var(x), np.var(y)
    assert m.emd_w2_gaussian(x, y) == pytest.approx((x.mean() - y.mean()) ** 2 + v1 + v2 - 2 * math.sqrt(v1 * v2))
    assert math.isnan(m.emd_w2_gaussian([], y))


def test_w1_to_law_matches_quadrature_and_samples() -> None:
    d = 8
    law = stats.chi2(df=d, loc=d / 2 * math.log(2 * math.pi), scale=0.5)
    x = np.sort(m.nll(np.random.default_rng(5).standard_normal((15, d)) * 1.2))
    f_emp = lambda t: np.searchsorted(x, t, side="right") / x.size  # noqa: E731
    pts = [law.ppf(1e-15), *x, law.isf(1e-15)]
    quad = sum(integrate.quad(lambda t: abs(f_emp(t) - law.cdf(t)), a, b, limit=200)[0]
               for a, b in zip(pts[:-1], pts[1:]))
    assert m.w1_to_law(x, d) == pytest.approx(quad, rel=1e-7)
    big = law.rvs(size=400_000, random_state=1)
    assert m.w1_to_law(x, d) == pytest.approx(stats.wasserstein_distance(x, big), rel=0.02)
    assert m.w1_empirical(x, big) == pytest.approx(stats.wasserstein_distance(x, big))
    assert math.isnan(m.w1_to_law([], d))


def test_normal_reference_modes() -> None:
    ex = m.normal_reference(16384)
    assert ex["mode"] == "exact" and "samples" not in ex
    json.dumps(ex)
    s1 = m.normal_reference(64, "samples", n=50, seed=7)
    s2 = m.normal_reference(64, "samples", n=50, seed=7)
    np.testing.assert_array_equal(s1["samples"], s2["samples"])
    assert s1["samples"].shape == (50,)
    assert s1["mean"] == pytest.approx(s1["samples"].mean())
    json.dumps({k: v for k, v in s1.items() if k != "samples"})
    with pytest.raises(ValueError):
        m.normal_reference(4, "bogus")  # type: ignore[arg-type]


def test_relative_distance_constructed_case() -> None:
    d = 16384
    mean, std = m.nll_law(d)
    erased = _exact_moment_sample(mean + 200.0, std)       # W2 to normal: 200² = 40000
    reference = _exact_moment_sample(mean + 100.0, std)    # W2 to normal: 100² = 10000
    r = m.relative_distance(erased, reference, d)
    assert r["erased_normal"] == pytest.approx(40000.0)
    assert r["reference_normal"] == pytest.approx(10000.0)
    assert r["erased_reference"] == pytest.approx(10000.0)
    assert r["relative_distance"] == pytest.approx(4.0)
    assert r["relative_distance_er"] == pytest.approx(1.0)
    assert r["normal"]["mode"] == "exact" and r["reasons"] == []
    json.dumps(r)
    w1 = m.relative_distance(erased, reference, d, metric="w1")
    assert w1["erased_reference"] == pytest.approx(100.0)
    assert w1["relative_distance"] == pytest.approx(2.0, rel=0.02)
    s = m.relative_distance(erased, reference, d, normal="samples", n=50, seed=0)
    assert s["normal"]["n"] == 50 and "samples" not in s["normal"]
    assert s["relative_distance"] > 1.5


def test_relative_distance_degenerate_sets() -> None:
    r = m.relative_distance([], [1.0, 2.0, float("nan")], 4)
    assert math.isnan(r["erased_normal"]) and math.isnan(r["relative_distance"])
    assert r["n_reference"] == 2 and any("erased" in why for why in r["reasons"])
    one = m.relative_distance([1.0], [1.0], 4, metric="w1")
    assert math.isnan(one["relative_distance"]) and len(one["reasons"]) == 2


def test_distances_against_cdist() -> None:
    Z = torch.randn(6, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    flat = Z.double().reshape(6, -1).numpy()
    euc, cos = m.pairwise_distances(Z)
    np.testing.assert_allclose(euc, cdist(flat, flat), atol=1e-10)
    np.testing.assert_allclose(cos, cdist(flat, flat, "cosine"), atol=1e-12)
    iu = np.triu_indices(6, 1)
    mean, std = m.offdiag_stats(euc)
    assert mean == pytest.approx(cdist(flat, flat)[iu].mean()) and std == pytest.approx(cdist(flat, flat)[iu].std())
    t = flat[0] * 0.5
    np.testing.assert_allclose(m.distances_to(Z, t), cdist(flat, t[None])[:, 0])
    np.testing.assert_allclose(m.distances_to(Z, t, "cosine"), cdist(flat, t[None], "cosine")[:, 0])
    assert all(math.isnan(v) for v in m.offdiag_stats(np.zeros((1, 1))))


def test_cv_and_summarize() -> None:
    x = [2.0, 4.0, 6.0]
    assert m.coefficient_of_variation(x) == pytest.approx(np.std(x) / 4.0)
    assert math.isnan(m.coefficient_of_variation([]))
    s = m.summarize([1.0, 3.0, math.inf, 2.0, math.nan])
    assert s == {"count": 3, "n_nonfinite": 2, "mean": 2.0, "std": pytest.approx(np.std([1, 2, 3])),
                 "min": 1.0, "max": 3.0, "median": 2.0}
    e = m.summarize([])
    assert e["count"] == 0 and math.isnan(e["mean"])
    assert m.summarize(np.array([5.0]))["std"] == 0.0
