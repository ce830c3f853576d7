"""The scramble analysis on tiny models: inputs are the scrambled originals, reassembled
reconstructions are the exact inverse permutation of the reconstructions, summary = records."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from memtui.engine.compute.run import run_spec as run
from memtui.engine.data.patches import patch_permutation, scramble, unscramble
from memtui.engine.runs.spec import RunSpec, SpecError


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_scramble_run(mem_spec_dict, tmp_path) -> None:
    d = dict(mem_spec_dict, analysis="scramble", options={"num_targets": 1, "num_scrambles": 2, "grid": 4,
                                                          "perm_seed": 5})
    out = tmp_path / "scr"
    s = run(RunSpec.from_dict(d), out)
    recs = {json.loads(x)["item_id"]: json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()}
    assert set(recs) == {"erased-img0", "erased-img0.scr00", "erased-img0.scr01"}
    assert recs["erased-img0"]["set"] == "target"
    orig = _png(out / "images" / "erased-img0.query.png")
    nlls = []
    for j in range(2):
        r = recs[f"erased-img0.scr{j:02d}"]
        perm = patch_permutation(4, 5 + j)
        assert r["set"] == "scramble" and r["perm"] == perm.tolist() and r["target_id"] == "erased-img0"
        q = _png(out / r["query"])
        np.testing.assert_array_equal(q, scramble(orig, 4, perm, channels_last=True))
        np.testing.assert_array_equal(unscramble(q, 4, perm, channels_last=True), orig)
        recon = _png(out / r["recon"])
        back = _png(out / r["reassembled"])
        np.testing.assert_array_equal(back, unscramble(recon, 4, perm, channels_last=True))
        mse = np.mean((back / 255.0 - orig / 255.0) ** 2)
        assert r["psnr_reassembled"] == pytest.approx(10 * np.log10(1 / mse), rel=1e-9)
        assert r["psnr_reassembled"] == pytest.approx(r["psnr"], rel=1e-12)  # a permutation keeps the MSE
        nlls.append(r["nll"])
    t = s["targets"]["erased-img0"]
    assert t["original_nll"] == recs["erased-img0"]["nll"]
    assert t["scrambled_nll"]["mean"] == pytest.approx(np.mean(nlls))
    assert s["nll_increase"]["mean"] == pytest.approx(np.mean(nlls) - recs["erased-img0"]["nll"])
    assert s["fraction_less_likely"] == np.mean(np.array(nlls) > recs["erased-img0"]["nll"])


def test_grid_must_divide_the_image(mem_spec_dict, tmp_path) -> None:
    d = dict(mem_spec_dict, analysis="scramble", image_size=32, options={"grid": 3})
    with pytest.raises(SpecError, match="divisible by 3"):
        run(RunSpec.from_dict(d), tmp_path / "bad")
