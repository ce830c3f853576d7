"""Resume verifies what ok records claim (issue 12, item 8): missing or damaged files and records
without metrics are recomputed; a hand-edited spec.json is detected."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from memtui.cli import main
from memtui.engine.runs.store import RunDir

from tests.helpers import write_coco, write_official


@pytest.fixture()
def finished(tiny_pipe_dir, tmp_path: Path) -> tuple[list[str], Path]:
    erased, ref = write_official(tmp_path / "erased", 1), write_coco(tmp_path / "coco", [7])
    out = tmp_path / "run"
    argv = ["--batch", "--base", str(tiny_pipe_dir), "--erased", str(erased), "--reference", str(ref),
            "--method", "ddim", "--steps", "3", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    return argv, out


def n_item_events(out: Path) -> int:
    return sum(e["type"] == "item_done" for e in RunDir(out).read_events())


@pytest.mark.parametrize("damage", ["delete_latent", "truncate_latent", "empty_png", "delete_png"])
def test_damaged_item_files_are_recomputed(finished, damage, capsys) -> None:
    argv, out = finished
    rd = RunDir(out)
    before = n_item_events(out)
    item = "erased-0"
    lat, png = rd.latent_path(item), rd.image_path(item, "recon")
    if damage == "delete_latent":
        lat.unlink()
    elif damage == "truncate_latent":
        lat.write_bytes(lat.read_bytes()[:20])
    elif damage == "empty_png":
        png.write_bytes(b"")
    else:
        png.unlink()
    assert main(argv) == 0
    assert n_item_events(out) == before + 1  # that item only
    assert lat.stat().st_size > 100 and png.stat().st_size > 0
    assert rd.read_results()[item]["status"] == "ok"


def test_ok_record_without_metrics_is_retried(finished) -> None:
    argv, out = finished
    rd = RunDir(out)
    results = out / RunDir.RESULTS
    recs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    recs[0]["nll"] = None
    results.write_text("".join(json.dumps(r) + "\n" for r in recs))
    before = n_item_events(out)
    assert main(argv) == 0
    assert n_item_events(out) == before + 1
    assert isinstance(rd.read_results()[recs[0]["item_id"]]["nll"], float)


def test_hand_edited_spec_is_detected(finished, capsys) -> None:
    _, out = finished
    spec_path = out / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec["steps"] = 7
    spec_path.write_text(json.dumps(spec))
    capsys.readouterr()
    assert main(["--batch", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "steps" in err and "Traceback" not in err, err
