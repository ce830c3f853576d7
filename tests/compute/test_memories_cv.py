"""The sphere's coefficient of variation (paper Figure 6) and the SIB path rule, without a model:
``cv`` is std / mean of the memory -> target-seed distances (the radii), ``cv_pairwise`` that of
the pairwise memory distances, both checked against numpy on known seeds; ``sphere_cv`` reads
summaries of both layouts (before ``cv_pairwise`` existed, ``cv`` was the pairwise one); and
``sib_path = "auto"`` resolves to direct for NTI, reencode otherwise."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from memtui.engine.analyses.memories import Memories, resolve_sib_path, sphere_cv
from memtui.engine.compute.memories import CV_DEFINITION, SIBSettings
from memtui.engine.compute.memories_stats import average_figures, target_figures
from memtui.engine.runs.spec import RunSpec

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "runs_v1" / "memories" / "summary.json"
NORMAL = {"mode": "exact", "d": 256, "mean": 256 * (1 + np.log(2 * np.pi)) / 2, "std": np.sqrt(128)}


def _sphere(n: int, radius: float, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """n seeds exactly at Euclidean distance ``radius`` from ``centre``, in random directions."""
    u = rng.standard_normal((n, centre.size))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return (centre.reshape(-1) + radius * u).reshape(n, *centre.shape)


def _recs(n: int, seeds: np.ndarray, psnr0: float = 20.0) -> list[dict]:
    flat = seeds.reshape(n, -1)
    return [{"psnr": psnr0 + i, "psnr_seed_only": psnr0 - 1 - i, "psnr_decoder": 30.0 + i,
             "nll": 0.5 * float((flat[i] ** 2).sum()) + 0.5 * flat.shape[1] * np.log(2 * np.pi),
             "support_id": f"s{i}", "status": "ok"} for i in range(n)]


def _pairwise(Z: np.ndarray) -> np.ndarray:
    Z = Z.reshape(len(Z), -1)
    return np.array([np.linalg.norm(Z[a] - Z[b]) for a in range(len(Z)) for b in range(a + 1, len(Z))])


def test_seeds_on_a_sphere_around_the_target_have_cv_zero_but_pairwise_not() -> None:
    rng = np.random.default_rng(0)
    target = rng.standard_normal((4, 8, 8))
    mem = _sphere(6, 15.0, target, rng)
    ctl = rng.standard_normal((6, 4, 8, 8))
    radii = np.linalg.norm(mem.reshape(6, -1) - target.reshape(-1), axis=1)
    np.testing.assert_allclose(radii, 15.0, rtol=1e-12)  # the construction itself
    pw = _pairwise(mem)
    assert pw.std() / pw.mean() > 0.01

    figs = target_figures({"psnr": 25.0, "status": "ok"}, target, _recs(6, mem), mem, _recs(6, ctl), ctl, NORMAL)
    assert figs["cv"] == pytest.approx(0.0, abs=1e-12)
    assert figs["memories"]["cv"] == figs["cv"]
    assert figs["cv_pairwise"] == pytest.approx(pw.std() / pw.mean(), rel=1e-9)
    assert figs["memories"]["cv_pairwise"] == figs["cv_pairwise"]
    assert figs["memories"]["to_target_euclidean"]["mean"] == pytest.approx(15.0, rel=1e-12)
    assert "cv_to_target" not in figs["memories"]  # the radii CV is now ``cv`` itself
    cpw = _pairwise(ctl)
    assert figs["control"]["cv_pairwise"] == pytest.approx(cpw.std() / cpw.mean(), rel=1e-9)
    assert "cv" not in figs["control"]  # controls have no target seed to measure from
    assert figs["memories"]["psnr_seed_only"]["mean"] == pytest.approx(np.mean([19.0 - i for i in range(6)]))
    assert figs["control"]["psnr_seed_only"]["count"] == 6
    assert sphere_cv({"targets": {"t": figs}})["targets"]["t"] == {"cv": figs["cv"], "cv_pairwise": figs["cv_pairwise"]}


def test_cv_and_average_match_numpy_on_random_seeds() -> None:
    rng = np.random.default_rng(1)
    per_target, mem_recs, ctl_recs, expect = {}, [], [], []
    for k, n in enumerate((5, 4, 7)):
        target = rng.standard_normal((4, 8, 8))
        # memories at radii spread around 10: a known, non-zero radii CV
        r = 10.0 + rng.uniform(-1.0, 1.0, n)
        mem = np.stack([_sphere(1, ri, target, rng)[0] for ri in r])
        ctl = rng.standard_normal((n, 4, 8, 8))
        mr, cr = _recs(n, mem, 20 + k), _recs(n, ctl, 10 + k)
        figs = target_figures({"status": "ok"}, target, mr, mem, cr, ctl, NORMAL)
        d = np.linalg.norm(mem.reshape(n, -1) - target.reshape(-1), axis=1)
        pw = _pairwise(mem)
        assert figs["cv"] == pytest.approx(d.std() / d.mean(), rel=1e-9)
        assert figs["cv"] == pytest.approx(r.std() / r.mean(), rel=1e-9)
        assert figs["cv_pairwise"] == pytest.approx(pw.std() / pw.mean(), rel=1e-9)
        per_target[f"t{k}"] = figs
        mem_recs += mr
        ctl_recs += cr
        expect.append((d.std() / d.mean(), pw.std() / pw.mean()))
    avg = average_figures(per_target, mem_recs, ctl_recs, NORMAL)
    radii, pairwise = np.array(expect).T
    assert avg["cv"]["mean"] == pytest.approx(radii.mean(), rel=1e-9)
    assert avg["cv"]["std"] == pytest.approx(radii.std(), rel=1e-9)
    assert avg["cv_pairwise"]["mean"] == pytest.approx(pairwise.mean(), rel=1e-9)
    assert avg["cv_pairwise"]["std"] == pytest.approx(pairwise.std(), rel=1e-9)
    assert avg["memory_psnr_seed_only"]["mean"] == pytest.approx(np.mean([r["psnr_seed_only"] for r in mem_recs]))

    summary = {"analysis": "memories", "targets": per_target, "average": avg}
    s = sphere_cv(summary)
    assert not s["legacy"]
    assert s["cv"]["mean"] == pytest.approx(radii.mean()) and s["cv_pairwise"]["std"] == pytest.approx(pairwise.std())
    psnr = np.mean([r["psnr"] for r in mem_recs])
    assert Memories.headline(summary) == f"mem. PSNR {psnr:.2f} dB  CV {radii.mean():.3f}"
    t = Memories.table(summary, "RUN")
    assert t.columns[3] == "seed-only" and t.columns[-2:] == ["CV", "CV pairwise"]
    for row, (rc, pc) in zip(t.rows, expect):
        assert row[-2:] == [f"{rc:.3f}", f"{pc:.3f}"]
    assert CV_DEFINITION.startswith("cv = population std / mean of the Euclidean distances from each of a target's "
                                     "memory seeds to the target's own seed") and "cv_pairwise" in CV_DEFINITION


def test_legacy_summary_cv_keys_are_the_pairwise_one() -> None:
    """A summary written before ``cv_pairwise``: its ``cv`` keys are the pairwise CV; the radii CV
    per target is ``memories.cv_to_target``, averaged over targets here."""
    old = {"analysis": "memories",
           "targets": {"a": {"cv": 0.30, "memories": {"cv": 0.30, "cv_to_target": 0.02}, "control": {"cv": 0.4}},
                       "b": {"cv": 0.50, "memories": {"cv": 0.50, "cv_to_target": 0.04}, "control": {"cv": 0.6}}},
           "average": {"memory_psnr": {"mean": 25.258}, "cv": {"mean": 0.40, "std": 0.10}}}
    s = sphere_cv(old)
    assert s["legacy"]
    assert s["targets"] == {"a": {"cv": 0.02, "cv_pairwise": 0.30}, "b": {"cv": 0.04, "cv_pairwise": 0.50}}
    assert s["cv"]["mean"] == pytest.approx(np.mean([0.02, 0.04])) and s["cv"]["std"] == pytest.approx(0.01)
    assert s["cv_pairwise"] == {"mean": 0.40, "std": 0.10}
    assert Memories.headline(old) == "mem. PSNR 25.26 dB  CV 0.030"
    rows = Memories.table(old, "RUN").rows
    assert [r[-2:] for r in rows] == [["0.020", "0.300"], ["0.040", "0.500"]]
    # an old summary without per-target figures: only the pairwise CV is known, and says so
    bare = {"average": {"memory_psnr": {"mean": 25.258}, "cv": {"mean": 0.2109}}}
    assert sphere_cv(bare)["cv"] == {"mean": None, "std": None}
    assert Memories.headline(bare) == "mem. PSNR 25.26 dB  CV pairwise 0.211"
    # the same with cv_pairwise: the new layout, cv is the radii one
    new = {"average": {"memory_psnr": {"mean": 25.258}, "cv": {"mean": 0.0209}, "cv_pairwise": {"mean": 0.2}}}
    assert Memories.headline(new) == "mem. PSNR 25.26 dB  CV 0.021"


def test_legacy_fixture_reads_its_radii_cv() -> None:
    summary = json.loads(LEGACY.read_text())
    assert "cv_pairwise" not in json.dumps(summary)
    radii = [f["memories"]["cv_to_target"] for f in summary["targets"].values()]
    s = sphere_cv(summary)
    assert s["legacy"] and s["cv"]["mean"] == pytest.approx(np.mean(radii)) and s["cv"]["mean"] > 0
    assert s["cv_pairwise"]["mean"] == summary["average"]["cv"]["mean"]


@pytest.mark.parametrize("method, given, expected", [
    ("nti", None, "direct"), ("renoise", None, "reencode"), ("ddim", None, "reencode"),
    ("nti", "auto", "direct"), ("renoise", "auto", "reencode"),
    ("nti", "reencode", "reencode"), ("renoise", "direct", "direct"), ("ddim", "direct", "direct"),
])
def test_sib_path_auto_resolves_for_the_method(method, given, expected) -> None:
    options = {"num_supports": 2} if given is None else {"num_supports": 2, "sib_path": given}
    spec = RunSpec.from_dict({"analysis": "memories", "base": "b", "method": method, "options": options},
                             validate=False)
    assert Memories.options(spec).sib_path == (given or "auto")  # the declaration keeps what was given
    settings = SIBSettings.from_spec(spec)
    assert settings.sib_path == expected and settings.to_dict()["sib_path"] == expected
    assert resolve_sib_path(given or "auto", method) == expected


@pytest.mark.parametrize("given, recorded, expected", [
    (None, None, "direct"),            # a new NTI run: auto -> direct
    (None, "reencode", "reencode"),    # an NTI run begun when the default was reencode resumes on it
    ("auto", "reencode", "reencode"),
    ("direct", None, "direct"),
])
def test_an_nti_run_resumes_on_the_path_it_began(mem_spec_dict, tmp_path, given, recorded, expected) -> None:
    from memtui.engine.compute.memories import _MemoriesRun
    from memtui.engine.runs.store import RunDir

    d = {**mem_spec_dict, "method": "nti", "options": {"num_targets": 1, "num_supports": 2}}
    if given:
        d["options"]["sib_path"] = given
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    if recorded:
        (rd.path / "summary.json").write_text(json.dumps({"analysis": "memories", "options": {"sib_path": recorded}}))
    loop = _MemoriesRun(RunSpec.from_dict(d), rd)
    loop.plan()
    assert loop.opts.sib_path == expected and loop.opts.to_dict()["sib_path"] == expected
