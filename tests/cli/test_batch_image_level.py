"""memtui --batch --analysis memories|scramble: the flags land in spec.options and the run finishes
with the image-level tables on stdout."""
from __future__ import annotations

import json

from memtui.cli import main


def _base(mem_spec_dict, out) -> list[str]:
    return ["--batch", "--base", mem_spec_dict["base"], "--erased", mem_spec_dict["erased"],
            "--reference", mem_spec_dict["reference"], "--method", "ddim", "--steps", "2",
            "--device", "cpu", "--out", str(out)]


def test_batch_memories_flags(mem_spec_dict, tmp_path, capsys) -> None:
    out = tmp_path / "m"
    rc = main(_base(mem_spec_dict, out) + ["--analysis", "memories", "--num-targets", "1", "--num-supports", "2",
                                           "--vae-steps", "2", "--sib-path", "direct"])
    assert rc == 0
    spec = json.loads((out / "spec.json").read_text())
    assert spec["analysis"] == "memories"
    assert spec["options"] == {"num_targets": 1, "num_supports": 2, "vae_steps": 2, "sib_path": "direct"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sets"]["memory"]["n_ok"] == 2 and summary["options"]["sib_path"] == "direct"
    text = capsys.readouterr().out
    assert "memories · ddim" in text and "pairwise distance" in text and "CV" in text


def test_batch_scramble_flags(mem_spec_dict, tmp_path, capsys) -> None:
    out = tmp_path / "s"
    rc = main(_base(mem_spec_dict, out) + ["--analysis", "scramble", "--targets", "1", "--grid", "2"])
    assert rc == 0
    recs = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in recs] == ["erased-img1", "erased-img1.scr00"]
    assert recs[1]["grid"] == 2 and len(recs[1]["perm"]) == 4
    assert "NLL increase" in capsys.readouterr().out
