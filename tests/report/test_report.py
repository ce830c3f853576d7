"""Detectors joining a run and the report: two concept runs made through the real CLI on the tiny
model, detector results checked against direct model calls, report numbers against summary.json."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib", reason="reports need matplotlib (pip install 'memtui[report]')")


@pytest.fixture(scope="module")
def concept_runs(generated_set: Path, tiny_pipe_dir: Path, imagenet_dirs, tmp_path_factory) -> list[Path]:
    """Two finished concept runs (DDIM, 3 steps, 2 + 2 items) made with ``memtui --batch``; the
    first names an ImageNet detector for its concept (church)."""
    from memtui.cli import main

    root = tmp_path_factory.mktemp("runs")
    common = ["--batch", "--base", str(tiny_pipe_dir), "--erased", str(generated_set), "--reference",
              str(generated_set), "--method", "ddim", "--steps", "3", "--max-items", "2", "--device", "cpu"]
    assert main([*common, "--out", str(root / "church"), "--concept", "church",
                 "--detectors", f"imagenet:{imagenet_dirs['random']}"]) == 0
    assert main([*common, "--out", str(root / "parachute"), "--concept", "parachute", "--seed", "7"]) == 0
    return [root / "church", root / "parachute"]


def _records(run: Path) -> dict[str, dict]:
    out = {}
    for line in (run / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[r["item_id"]] = r
    return out


def test_detectors_join_records_and_summary(concept_runs, imagenet_dirs) -> None:
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from memtui.engine.compute.detect import apply_detectors

    run = concept_runs[0]
    recs = _records(run)
    proc = AutoImageProcessor.from_pretrained(imagenet_dirs["random"], local_files_only=True)
    model = AutoModelForImageClassification.from_pretrained(imagenet_dirs["random"], local_files_only=True).eval()
    summary = json.loads((run / "summary.json").read_text())
    det = summary["detection"]["imagenet:church"]
    assert det["rule"] == "argmax == class id"
    for set_name in ("erased", "reference"):
        ids = [i for i, r in recs.items() if r["set"] == set_name]
        imgs = [Image.open(run / recs[i]["recon"]).convert("RGB") for i in ids]
        with torch.no_grad():
            p = torch.softmax(model(**proc(images=imgs, return_tensors="pt")).logits, -1).numpy()
        for i, pi in zip(ids, p):
            got = recs[i]["detections"]["imagenet:church"]["recon"]
            assert got["flag"] == (int(pi.argmax()) == 497)
            assert got["score"] == pytest.approx(float(pi[497]), rel=1e-4)
        assert det["sets"][set_name]["recon_rate"] == pytest.approx(float(np.mean(p.argmax(1) == 497)))
        assert det["sets"][set_name]["n"] == len(ids)
    # idempotent: scoring again appends nothing
    n_lines = len((run / "results.jsonl").read_text().splitlines())
    apply_detectors(run, [{"kind": "imagenet", "path": str(imagenet_dirs["random"]), "concept": "church"}])
    assert len((run / "results.jsonl").read_text().splitlines()) == n_lines


def _is_png(path: Path) -> bool:
    with Image.open(path) as im:
        im.verify()
        return im.format == "PNG" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_figures_and_numbers_equal_summaries(concept_runs, tmp_path) -> None:
    from memtui.cli import main

    out = tmp_path / "report"
    assert main(["--batch", "--report", *map(str, concept_runs), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    figs = [out / m for m in __import__("re").findall(r"\]\((figures/[^)]+\.png)\)", md)]
    names = {f.name for f in figs}
    assert {"psnr.png", "relative_distance.png", "nll_church.png", "nll_parachute.png",
            "pairs_church.png"} <= names
    assert all(f.is_file() and _is_png(f) for f in figs)

    summaries = {p.name: json.loads((p / "summary.json").read_text()) for p in concept_runs}
    rows = {r["run"]: r for r in csv.DictReader(open(out / "runs.csv"))}
    for name, s in summaries.items():
        row = rows[name]
        for key in ("relative_distance", "erased_normal", "reference_normal", "erased_reference"):
            assert float(row[key]) == s[key]
        for set_name in ("erased", "reference"):
            for m in ("psnr", "nll"):
                for stat in ("mean", "std"):
                    assert float(row[f"sets.{set_name}.{m}.{stat}"]) == s["sets"][set_name][m][stat]
    assert float(rows["church"]["detection.imagenet:church.erased.recon_rate"]) == \
        summaries["church"]["detection"]["imagenet:church"]["sets"]["erased"]["recon_rate"]
    # the method x concept table: one row (ddim·base), a column per concept
    mc = list(csv.DictReader(open(out / "method_concept.csv")))
    assert {(r["method"], r["concept"]) for r in mc} == {("ddim·base", "church"), ("ddim·base", "parachute")}
    for r in mc:
        assert float(r["relative_distance"]) == summaries[r["run"]]["relative_distance"]
    line = next(x for x in md.splitlines() if x.startswith("| ddim·base |"))
    rd = [summaries["church"]["relative_distance"], summaries["parachute"]["relative_distance"]]
    assert line == "| ddim·base | " + " | ".join(f"{v:.4g}" for v in rd) + " |"
    items = list(csv.DictReader(open(out / "items.csv")))
    recs = _records(concept_runs[1])
    assert len([r for r in items if r["run"] == "parachute"]) == len(recs)
    for r in items:
        if r["run"] == "parachute":
            assert float(r["psnr"]) == recs[r["item_id"]]["psnr"]


def test_report_of_a_memories_run(tmp_path) -> None:
    """A hand-written memories run (records with set target/memory and target_id, seeds in
    latents/): distances in the report equal numpy's, grids and histograms are PNGs."""
    import torch
    from safetensors.torch import save_file

    from memtui.engine.report import write_report
    from memtui.engine.runs.store import RunDir
    from memtui.engine.runs.spec import RunSpec

    rd = RunDir.create(tmp_path / "mem", RunSpec(analysis="memories", base="x"))
    rng = np.random.default_rng(0)
    seeds = {}
    for t in ("0", "1"):
        for j, kind in enumerate(["target"] + ["memory"] * 4):
            iid = f"t{t}-{kind}-{j}"
            z = torch.from_numpy(rng.standard_normal((4, 8, 8)).astype(np.float32))
            seeds[iid] = z.numpy().reshape(-1)
            (rd.path / "latents").mkdir(exist_ok=True)
            save_file({"z_T": z, "z_0": z.clone()}, str(rd.latent_path(iid)))
            rd.write_image(iid, "recon", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            rd.append_result({"item_id": iid, "set": kind, "target_id": t, "status": "ok", "psnr": 20.0 + j,
                              "nll": float(0.5 * (seeds[iid] ** 2).sum()), "z_shape": [4, 8, 8],
                              "latents": f"latents/{iid}.safetensors", "recon": f"images/{iid}.recon.png",
                              "query": f"images/{iid}.recon.png" if kind == "target" else None})
    rd.write_summary({"analysis": "memories", "status": "finished"})
    out = tmp_path / "rep"
    write_report([rd.path], out)
    rows = list(csv.DictReader(open(out / "memory_distances.csv")))
    assert [r["target_id"] for r in rows] == ["0", "1"]
    for r in rows:
        t = r["target_id"]
        Z = np.stack([seeds[f"t{t}-memory-{j}"] for j in range(1, 5)]).astype(np.float64)
        pw = [np.linalg.norm(Z[a] - Z[b]) for a in range(4) for b in range(a + 1, 4)]
        assert float(r["pairwise_mean"]) == pytest.approx(np.mean(pw), rel=1e-5)
        assert float(r["pairwise_std"]) == pytest.approx(np.std(pw), rel=1e-5)
        to_t = np.linalg.norm(Z - seeds[f"t{t}-target-0"], axis=1)
        assert float(r["to_target_mean"]) == pytest.approx(to_t.mean(), rel=1e-5)
        assert float(r["cv"]) == pytest.approx(to_t.std() / to_t.mean(), rel=1e-5)  # the sphere's, over radii
        assert float(r["pairwise_cv"]) == pytest.approx(np.std(pw) / np.mean(pw), rel=1e-5)
    for name in ("memory_distances_mem.png", "memories_mem_0.png", "memories_mem_1.png", "nll_mem.png"):
        assert _is_png(out / "figures" / name)


def test_report_of_a_scramble_run(tmp_path) -> None:
    """A scramble run's summary becomes the report's scramble table (the summary's numbers), and its
    NLL histogram holds both the targets and the scrambles."""
    from memtui.engine.report import write_report
    from memtui.engine.runs.spec import RunSpec
    from memtui.engine.runs.store import RunDir

    rd = RunDir.create(tmp_path / "scr", RunSpec(analysis="scramble", base="x"))
    nll = {"c0": 360.0, "c0.scr00": 391.5, "c0.scr01": 395.5}
    for iid, v in nll.items():
        rd.append_result({"item_id": iid, "set": "target" if "scr" not in iid else "scramble", "target_id": "c0",
                          "status": "ok", "psnr": 27.0, "nll": v, "z_shape": [4, 8, 8]})
    rd.write_summary({"analysis": "scramble", "status": "finished", "d": 256,
                      "targets": {"c0": {"original_nll": 360.0, "original_psnr": 27.0,
                                         "scrambled_nll": {"mean": 393.5, "std": 2.0},
                                         "scrambled_psnr": {"mean": 16.0}, "nll_increase": {"mean": 33.5, "std": 2.0}}},
                      "nll_increase": {"mean": 33.5, "std": 2.0}, "fraction_less_likely": 1.0})
    out = tmp_path / "rep"
    write_report([rd.path], out)
    md = (out / "report.md").read_text()
    section = md[md.index("## Scrambled images"):]
    assert "| scr | c0 | 360 | 393.5 ± 2 | 33.5 ± 2 | 27 | 16 |" in section
    assert "scrambles with a less likely seed: 100%" in section
    assert _is_png(out / "figures" / "nll_scr.png")
