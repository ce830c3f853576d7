"""A report over several runs skips a damaged one (issue 12 item 7): a warning on stderr and a line in
report.md naming it and why, while every readable run is reported as usual."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="reports need matplotlib (pip install 'memtui[report]')")

from memtui.engine.report import write_report  # noqa: E402
from memtui.engine.runs.spec import RunSpec  # noqa: E402
from memtui.engine.runs.store import RunDir  # noqa: E402


def _concept_run(path: Path, seed: int = 0) -> Path:
    """A hand-written finished concept run: 2 + 2 ok items with query/recon PNGs and a summary."""
    rd = RunDir.create(path, RunSpec(analysis="concept", base="x"))
    rng = np.random.default_rng(seed)
    for s in ("erased", "reference"):
        for j in range(2):
            iid = f"{s}-{j}"
            for kind in ("query", "recon"):
                rd.write_image(iid, kind, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
            rd.append_result({"item_id": iid, "set": s, "status": "ok", "psnr": 20.0 + j, "nll": 100.0 + j,
                              "query": f"images/{iid}.query.png", "recon": f"images/{iid}.recon.png"})
    stat = {"mean": 20.5, "std": 0.5}
    rd.write_summary({"analysis": "concept", "status": "finished", "relative_distance": 1.5,
                      "sets": {s: {"n_ok": 2, "psnr": stat, "nll": stat} for s in ("erased", "reference")}})
    return rd.path


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    good = _concept_run(tmp_path / "good")
    trunc = _concept_run(tmp_path / "truncpng", seed=1)
    png = trunc / "images" / "erased-0.recon.png"
    png.write_bytes(png.read_bytes()[:60])
    listspec = _concept_run(tmp_path / "listspec", seed=2)
    (listspec / "spec.json").write_text("[1, 2]\n")
    listsum = _concept_run(tmp_path / "listsummary", seed=3)
    (listsum / "summary.json").write_text("[]\n")
    resdir = _concept_run(tmp_path / "resultsdir", seed=5)
    (resdir / "results.jsonl").unlink()
    (resdir / "results.jsonl").mkdir()
    good2 = _concept_run(tmp_path / "good2", seed=4)
    return {"good": good, "truncpng": trunc, "listspec": listspec, "listsummary": listsum, "resultsdir": resdir,
            "good2": good2}


def test_report_skips_damaged_runs_with_warnings(runs: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    report = write_report(list(runs.values()), out)
    md = report.read_text()
    err = capsys.readouterr().err
    for bad, why in (("truncpng", "erased-0.recon.png"), ("listspec", "spec.json"),
                     ("listsummary", "summary.json"), ("resultsdir", "results.jsonl")):
        assert f"skipped run {bad}" in err and why in err.split(f"skipped run {bad}")[1].splitlines()[0]
        line = next(x for x in md.splitlines() if f"`{bad}`" in x and "skipped" in x)
        assert why in line
    rows = {r["run"] for r in csv.DictReader(open(out / "runs.csv"))}
    assert rows == {"good", "good2"}
    assert {r["run"] for r in csv.DictReader(open(out / "items.csv"))} == {"good", "good2"}
    assert (out / "figures" / "pairs_good.png").is_file() and (out / "figures" / "pairs_good2.png").is_file()
    assert (out / "figures" / "nll_good.png").is_file()
    assert not [f.name for f in (out / "figures").iterdir() if "truncpng" in f.name]
    assert "2 run(s)" in md and "4 skipped" in md


def test_report_cli_exits_ok_with_a_damaged_run(runs: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from memtui.cli import main

    out = tmp_path / "rep"
    assert main(["--batch", "--report", str(runs["good"]), str(runs["listspec"]), "--out", str(out)]) == 0
    assert "skipped run listspec" in capsys.readouterr().err
    assert json.loads((runs["good"] / "summary.json").read_text())["status"] == "finished"
    assert {r["run"] for r in csv.DictReader(open(out / "runs.csv"))} == {"good"}
