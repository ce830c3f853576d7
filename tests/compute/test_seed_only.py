"""What a seed is, method by method, through a whole run: every record holds ``psnr`` (the method's
own reconstruction) and ``psnr_seed_only`` (plain DDIM from ``z_T`` alone), two-part seeds store both
parts and use the joint NLL (and its law) for the EMDs and the relative distance, and spec.json /
summary.json say what the method calls its seed. Checked against recomputations from the saved files."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from memtui.engine import metrics
from memtui.engine.analyses import get as get_analysis
from memtui.engine.compute.concept import run_concept
from memtui.engine.core.tensors import to_uint8
from memtui.engine.diffusion.ddim import ddim_sample
from memtui.engine.model.loading import load_base
from memtui.engine.runs.spec import RunSpec
from memtui.engine.runs.store import RunDir
from memtui.engine.runs.view import RunView

from tests.helpers import write_coco, write_official

pytestmark = pytest.mark.usefixtures("_one_thread")
STEPS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("seed_data")
    return write_official(root / "erased", 2), write_coco(root / "coco", [632, 139])


@pytest.fixture(scope="module")
def runs(tiny_pipe_dir: Path, data, tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunDir]:
    out = {}
    for method in ("ddim", "edict", "nti"):
        rd = RunDir(tmp_path_factory.mktemp(method) / "run")
        spec = RunSpec(base=str(tiny_pipe_dir), erased=str(data[0]), reference=str(data[1]), method=method,
                       steps=STEPS, batch_size=2, device="cpu",
                       inversion={"nti": {"inner_steps": 2}} if method == "nti" else {}).validate()
        run_concept(spec, rd)
        out[method] = rd
    return out


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _seed_only_by_hand(pipe_dir: Path, rd: RunDir, rec: dict) -> float:
    """PSNR of the query against plain DDIM from the stored z_T with the prompt (guidance 1), decoded,
    one item at a time (the run batched two: float-level differences may flip a uint8 step, so the
    saved seed-only PNG is compared within one level and the PSNR within 1e-3 dB)."""
    pipe = load_base(str(pipe_dir), device="cpu")
    z_t = load_file(str(rd.path / rec["latents"]))["z_T"][None]
    emb = pipe.encode_prompts([rec["prompt"]])
    with torch.no_grad():
        img = pipe.decode_latents(ddim_sample(pipe, z_t, emb, STEPS)).clamp(-1, 1)
    mine = to_uint8(img)[0]
    if rec.get("seed_only"):
        assert np.abs(mine.astype(int) - _png(rd.path / rec["seed_only"]).astype(int)).max() <= 1
    return metrics.psnr(_png(rd.path / rec["query"]), mine)


def test_one_part_seed_reconstructs_from_the_seed_alone(runs) -> None:
    rd = runs["ddim"]
    recs = [r for r in rd.read_results().values() if r["status"] == "ok"]
    assert len(recs) == 4
    for r in recs:
        # DDIM's own reconstruction *is* DDIM from z_T: one image, the same PSNR, no second file
        assert r["psnr_seed_only"] == r["psnr"] and "seed_only" not in r and "nll_parts" not in r
        z_t = load_file(str(rd.path / r["latents"]))["z_T"]
        assert r["seed_dim"] == z_t.numel() == 256
        assert r["nll"] == pytest.approx(0.5 * float((z_t.double() ** 2).sum()) + 128 * math.log(2 * math.pi))
    summary = rd.read_summary()
    assert summary["method_seed"]["parts"] == ["z_T"] and summary["d"] == 256
    spec_json = json.loads((rd.path / "spec.json").read_text())
    assert spec_json["method_seed"]["parts"] == ["z_T"]
    assert RunSpec.from_file(rd.path).method == "ddim"  # the derived key is ignored on read


def test_two_part_seed_joint_nll_and_seed_only_psnr(runs, tiny_pipe_dir) -> None:
    rd = runs["edict"]
    recs = [r for r in rd.read_results().values() if r["status"] == "ok"]
    assert len(recs) == 4
    for r in recs:
        lat = load_file(str(rd.path / r["latents"]))
        x, y = lat["z_T"].double(), lat["y_T"].double()
        parts = {k: 0.5 * float((v ** 2).sum()) + 128 * math.log(2 * math.pi) for k, v in (("z_T", x), ("y_T", y))}
        assert r["seed_dim"] == 512
        assert r["nll_parts"] == pytest.approx(parts)
        assert r["nll"] == pytest.approx(parts["z_T"] + parts["y_T"])  # independent N(0, I) parts
        # the method's own reconstruction (PSNR against its PNG) and the seed-only one (recomputed)
        assert r["psnr"] == pytest.approx(metrics.psnr(_png(rd.path / r["query"]), _png(rd.path / r["recon"])))
        assert (rd.path / r["seed_only"]).is_file()
        assert r["psnr_seed_only"] == pytest.approx(_seed_only_by_hand(tiny_pipe_dir, rd, r), abs=1e-3)
        assert r["psnr_seed_only"] != r["psnr"]
    summary = rd.read_summary()
    assert summary["method_seed"]["parts"] == ["z_T", "y_T"] and summary["d"] == 512
    assert summary["normal"]["d"] == 512
    # the EMDs use the joint NLL against the law of 512 values
    erased = [r["nll"] for r in recs if r["set"] == "erased"]
    mean, std = metrics.nll_law(512)
    want = (np.mean(erased) - mean) ** 2 + (np.std(erased) - std) ** 2
    assert summary["erased_normal"] == pytest.approx(want, rel=1e-9)
    table = get_analysis("concept").table(summary, rd.path)
    assert "seed-only dB" in table.columns
    assert any("z_T + y_T" in n and "512" in n for n in table.notes)
    view = RunView.open(rd.path)
    assert view.main_psnr("psnr_seed_only") == pytest.approx(summary["sets"]["erased"]["psnr_seed_only"]["mean"])
    assert "seed-only" in view.headline()
    # without a summary (a run still going), the seed size comes from both parts' latents headers
    assert RunView(rd.path, json.loads((rd.path / "spec.json").read_text()), {}).seed_dim() == 512


def test_nti_seed_only_drops_the_null_embeddings(runs, tiny_pipe_dir) -> None:
    rd = runs["nti"]
    recs = [r for r in rd.read_results().values() if r["status"] == "ok"]
    for r in recs:
        assert r["psnr_seed_only"] == pytest.approx(_seed_only_by_hand(tiny_pipe_dir, rd, r), abs=1e-3)
        assert "null_embs" in load_file(str(rd.path / r["latents"]))
    assert rd.read_summary()["method_seed"]["parts"] == ["z_T"]
    assert "null-text" in rd.read_summary()["method_seed"]["note"]


def test_old_summaries_without_seed_only_still_show() -> None:
    summary = {"analysis": "concept", "sets": {"erased": {"psnr": {"mean": 26.8, "std": 1.5}}}}
    table = get_analysis("concept").table(summary, "old")
    row = table.rows[0]
    assert row[table.columns.index("seed-only dB")] == "-"
    assert get_analysis("concept").headline(summary) == "PSNR 26.80 dB"


def test_a_diverged_inversion_is_an_error_not_a_seed(tiny_pipe_dir, data, tmp_path) -> None:
    """A method whose seed has NaN for one item: that item gets an error record naming the
    divergence (no latents file), the others are ok, and the summary counts it as an error."""
    from memtui.engine.inversion.base import Inverted, InversionMethod, numerics
    from memtui.engine.inversion.methods.ddim import DDIMOptions
    from memtui.engine.inversion.registry import METHODS

    class _Diverging(InversionMethod):
        name = "diverging"
        summary = "DDIM whose seed is NaN for the first item of each batch (a test dummy)"
        Options = DDIMOptions

        def invert(self, pipe, z0, emb, steps, options, generators, guidance, progress=None) -> Inverted:
            z = numerics("memtui.engine.inversion.ddim:ddim_invert")(pipe, z0, emb, steps, progress=progress).clone()
            z[0] = float("nan")  # the first item of every batch diverges
            return Inverted(z_T=z, guidance=guidance)

    METHODS.register(_Diverging)
    try:
        rd = RunDir(tmp_path / "run")
        spec = RunSpec(base=str(tiny_pipe_dir), erased=str(data[0]), reference=str(data[1]), method="diverging",
                       steps=STEPS, batch_size=2, device="cpu").validate()
        summary = run_concept(spec, rd)
    finally:
        METHODS.unregister("diverging")
    recs = rd.read_results()
    bad = [r for r in recs.values() if r["status"] == "error"]
    ok = [r for r in recs.values() if r["status"] == "ok"]
    assert len(bad) == 2 and len(ok) == 2  # batches of two: the first of each diverged
    for r in bad:
        assert "diverged" in r["error"] and "non-finite" in r["error"] and r["nll"] is None
        assert not (rd.path / "latents" / f"{r['item_id']}.safetensors").exists()
    assert all(math.isfinite(r["nll"]) for r in ok)
    assert sum(s["n_errors"] for s in summary["sets"].values()) == 2
