"""A reduced ``memtui --batch --demo`` run through the real code path (CLI -> spec -> concept analysis
on the erased twin -> prompt test), checked against the files it wrote."""
from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image

from memtui.cli import main
from memtui.engine.demo import DEMO_CONCEPT, erased_path, write_demo_datasets
from memtui.engine.detectors import load_detector


def test_write_demo_datasets_layouts(tmp_path) -> None:
    from memtui.engine.data.datasets import detect_layout, read_dataset

    e, r = write_demo_datasets(tmp_path, n_per_set=6, seed=3)
    assert detect_layout(e) == "official" and detect_layout(r) == "captions"
    items_e, items_r = read_dataset(e, "erased"), read_dataset(r, "reference")
    assert len(items_e) == len(items_r) == 6
    assert all(DEMO_CONCEPT in it.prompt for it in items_e)
    assert not any(DEMO_CONCEPT in it.prompt for it in items_r)
    e2, _ = write_demo_datasets(tmp_path / "again", n_per_set=6, seed=3)
    assert np.array_equal(np.asarray(Image.open(e / "imgs" / "2_0.png")), np.asarray(Image.open(e2 / "imgs" / "2_0.png")))


def test_reduced_demo_run(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["--batch", "--demo", "--out", str(out), "--method", "ddim", "--steps", "5", "--max-items", "3",
               "--demo-samples", "4", "--json"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    spec = json.loads((out / "spec.json").read_text())
    assert spec["demo"] is True and spec["ablated"] == str(erased_path())
    assert spec["options"]["concept"] == "circle"  # names the run in reports (not the folder "erased")
    assert len(list((out / "data" / "erased" / "imgs").glob("*.png"))) >= 32
    with open(out / "data" / "reference" / "captions.csv") as f:
        assert len(list(csv.DictReader(f))) >= 32
    assert summary["sets"]["erased"]["n_ok"] == 3 and summary["sets"]["reference"]["n_ok"] == 3
    pt = summary["prompt_test"]
    assert pt["n"] == 4 and pt["steps"] == 5 and pt["erased_concept"] == DEMO_CONCEPT
    det = load_detector("demo")
    for model in ("base", "erased"):
        for concept in det.concepts:
            files = sorted((out / "prompt_test" / model / concept).glob("*.png"))
            assert len(files) == 4
            imgs = [Image.open(p).convert("RGB") for p in files]
            assert imgs[0].size == (32, 32)
            assert pt["models"][model][concept]["rate"] == det.detect(imgs, concept).rate
    # resuming the finished run keeps the prompt test and succeeds
    assert main(["--batch", "--out", str(out), "--demo-samples", "4", "--json"]) == 0
    assert json.loads((out / "summary.json").read_text())["prompt_test"]["n"] == 4
