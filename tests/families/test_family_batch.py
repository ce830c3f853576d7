"""``memtui --batch`` on each family's tiny base: a concept run with an erased checkpoint of the
same family (reported like SD 1.x's), a memories run, generation with the family's default
sampler, and a cross-family checkpoint refused with exit 2 before any item runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from memtui.cli import main
from memtui.engine.testkit import save_state_dict, tiny_pipeline
from tests.helpers import make_captions_set

pytestmark = pytest.mark.usefixtures("_one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("famdata")
    return {"erased": make_captions_set(root / "erased", 2, 0), "reference": make_captions_set(root / "reference", 4, 1)}


CROSS_ATTENTION = {"flux": "transformer_blocks.0.attn."}  # ESD-x's keys: the text-reading attention


def _ckpt(family: str, folder: Path) -> Path:
    erased = tiny_pipeline(seed=21, family=family)
    mark = CROSS_ATTENTION.get(family, "attn2")
    return save_state_dict({k: v for k, v in erased.unet.state_dict().items() if mark in k},
                           folder / f"esd-{family}.safetensors")


def _args(base: Path, data: dict[str, Path], out: Path) -> list[str]:
    return ["--batch", "--base", str(base), "--erased", str(data["erased"]), "--reference", str(data["reference"]),
            "--method", "ddim", "--steps", "3", "--device", "cpu", "--out", str(out)]


@pytest.mark.parametrize("family", ["sd2", "sdxl", "flux"])
def test_concept_and_memories_runs(family, family_dirs, data, tmp_path, capsys) -> None:
    ck = _ckpt(family, tmp_path)
    out = tmp_path / "concept"
    assert main(_args(family_dirs[family], data, out) + ["--ablated", str(ck), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "finished" and summary["sets"]["erased"]["n_ok"] == 2
    loaded = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines() if '"loaded"' in x]
    kind, shape = ("transformer", [16, 8, 8]) if family == "flux" else ("unet_partial", [4, 8, 8])
    assert loaded[0]["family"] == family and loaded[0]["load_report"]["kind"] == kind
    assert loaded[0]["load_report"]["changed"]["count"] > 0
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert all(r["status"] == "ok" and r["z_shape"] == shape for r in recs)
    mem = tmp_path / "mem"
    assert main(_args(family_dirs[family], data, mem) + ["--analysis", "memories", "--num-targets", "1",
                                                          "--num-supports", "2", "--vae-steps", "2"]) == 0
    assert json.loads((mem / "summary.json").read_text())["sets"]["memory"]["n_ok"] == 2


def test_cross_family_checkpoint_exits_2_naming_both(family_dirs, data, tmp_path, capsys) -> None:
    ck = _ckpt("sdxl", tmp_path)
    full = save_state_dict(tiny_pipeline(seed=2, family="sdxl").unet.state_dict(), tmp_path / "sdxl-unet.safetensors")
    out = tmp_path / "bad"
    rc = main(_args(family_dirs["sd1"], data, out) + ["--ablated", str(full)])
    err = capsys.readouterr().err
    assert rc == 2 and "Stable Diffusion XL (sdxl)" in err and "Stable Diffusion 1.x (sd1)" in err
    assert not (out / "results.jsonl").exists() or not (out / "results.jsonl").read_text()
    assert ck.exists()


@pytest.mark.parametrize("family,sampler", [("sd1", "lms"), ("sd2", "ddim"), ("sdxl", "euler"), ("flux", "flow_euler")])
def test_generate_uses_the_family_default_sampler(family, sampler, family_dirs, tmp_path) -> None:
    csv = tmp_path / "prompts.csv"
    csv.write_text("case_number,prompt,evaluation_seed\n0,a red circle,3\n")
    out = tmp_path / "gen"
    assert main(["--batch", "--generate", "--base", str(family_dirs[family]), "--prompts", str(csv),
                 "--steps", "3", "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sampler"] == sampler and summary["n_ok"] == 1
