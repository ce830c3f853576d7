"""``memtui --batch --sweep`` / ``--sweep-status`` on the tiny pipeline: a 2×2 grid whose cells equal
direct ``run_spec`` runs, skip on re-run, a bad file refused before anything is written, a failing
cell that stops nothing, and a worker killed with kill -9 that a re-run finishes (every item once)."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from memtui.cli import main
from memtui.engine.compute.run import run_spec
from memtui.engine.runs.spec import RunSpec
from memtui.engine.runs.store import RunDir

from tests.helpers import sweep_command, wait_for_a_record, write_coco, write_official

pytestmark = pytest.mark.usefixtures("_one_thread")

SWEEP = """\
name = "tiny"
methods = {methods}
analyses = ["concept"]

[spec]
steps = {steps}
max_items = {items}
batch_size = {batch}
device = "cpu"

[[base]]
name = "tiny"
path = "{pipe}"

[[checkpoint]]
name = "orig-a"
concept = "a"
erasure = "none"

[[checkpoint]]
name = "orig-b"
concept = "b"

[concept.a]
erased = "{erased_a}"
reference = "coco"

[concept.b]
erased = "{erased_b}"
reference = "coco"
"""


def write_sweep(folder: Path, pipe: Path, methods: str = '["ddim", "fpi"]', steps: int = 2, items: int = 1,
                batch: int = 1, erased_a: str = "erased_a", erased_b: str = "erased_b") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_official(folder / "erased_a", 3)
    write_official(folder / "erased_b", 3, start_seed=5)
    write_coco(folder / "coco", [7, 3, 5])
    (folder / "empty").mkdir(exist_ok=True)  # exists (the spec is valid) but holds no dataset
    p = folder / "sweep.toml"
    p.write_text(SWEEP.format(methods=methods, steps=steps, items=items, batch=batch, pipe=pipe,
                              erased_a=erased_a, erased_b=erased_b))
    return p


@pytest.fixture(scope="module")
def grid(tiny_pipe_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """A 2 checkpoints × 2 methods sweep run once with two workers: (sweep file, sweep dir, exit code)."""
    root = tmp_path_factory.mktemp("grid")
    sweep = write_sweep(root, tiny_pipe_dir)
    out = root / "out"
    # the cells' processes run single-threaded like this one (module fixture _one_thread), so the
    # float32 kernels round alike and the direct runs compare to 1e-6 (2 threads differ by ~3e-6 nats)
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        code = main(["--batch", "--sweep", str(sweep), "--out", str(out), "--workers", "2"])
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old
    return sweep, out, code


CELLS = ["orig-a__a__ddim__concept", "orig-a__a__fpi__concept", "orig-b__b__ddim__concept", "orig-b__b__fpi__concept"]


def test_grid_finishes_and_equals_direct_runs(grid, tmp_path) -> None:
    sweep, out, code = grid
    assert code == 0
    book = json.loads((out / "sweep.json").read_text())
    assert [c["name"] for c in book["cells"]] == CELLS
    assert all(c["status"] == "finished" and c["error"] is None for c in book["cells"])
    assert book["executor"]["name"] == "local" and book["grid"]["methods"] == ["ddim", "fpi"]
    assert {c["worker"] for c in book["cells"]} <= {0, 1}
    for cell in book["cells"]:
        rd = RunDir(out / cell["name"])
        summary = rd.read_summary()
        assert summary["status"] == "finished" and summary["complete"] is True
        direct = RunDir(tmp_path / cell["name"])
        run_spec(RunSpec.from_dict(cell["spec"]), direct)
        got, want = rd.read_results(), direct.read_results()
        assert list(got) == list(want) == ["erased-0", "reference-3"]
        for iid in want:
            assert got[iid]["status"] == want[iid]["status"] == "ok"
            for key in ("psnr", "nll"):
                assert got[iid][key] == pytest.approx(want[iid][key], abs=1e-6), (cell["name"], iid, key)


def test_rerun_skips_finished_cells(grid, capsys) -> None:
    sweep, out, _ = grid
    before = {c: (out / c / "results.jsonl").read_bytes() for c in CELLS}
    events = {c: len(RunDir(out / c).read_events()) for c in CELLS}
    assert main(["--batch", "--sweep", str(sweep), "--out", str(out)]) == 0
    assert "4 finished, 0 to run" in capsys.readouterr().err
    assert {c: (out / c / "results.jsonl").read_bytes() for c in CELLS} == before
    assert {c: len(RunDir(out / c).read_events()) for c in CELLS} == events  # not even resumed


def test_sweep_status_prints_every_cell(grid, capsys) -> None:
    _, out, _ = grid
    assert main(["--batch", "--sweep-status", str(out)]) == 0
    text = capsys.readouterr().out
    for name in CELLS:
        line = next(ln for ln in text.splitlines() if ln.startswith(name))
        assert " finished " in line and "2/2" in line and "PSNR" in line and " dB" in line
    assert "4 cell(s): 4 finished" in text
    assert main(["--batch", "--sweep-status", str(out / "nope")]) == 2


def test_bad_sweep_file_is_refused_before_anything_is_written(tiny_pipe_dir, tmp_path, capsys) -> None:
    sweep = write_sweep(tmp_path, tiny_pipe_dir)
    sweep.write_text(sweep.read_text().replace("steps = 2", "stepz = 2"))
    out = tmp_path / "out"
    assert main(["--batch", "--sweep", str(sweep), "--out", str(out)]) == 2
    assert "[spec] unknown field 'stepz' (line 6)" in capsys.readouterr().err
    assert not out.exists()


def test_failing_cell_and_kill_9_then_rerun(tiny_pipe_dir, tmp_path) -> None:
    """orig-a's erased folder holds no dataset (found by the cell's own run); orig-b runs after it and its
    worker is killed with kill -9 mid-cell; a re-run finishes orig-b with every item exactly once."""
    sweep = write_sweep(tmp_path, tiny_pipe_dir, methods='["ddim"]', steps=3, items=3, erased_a="empty")
    out = tmp_path / "out"
    good = out / "orig-b__b__ddim__concept"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with sweep_command(sweep, out, "--workers", "1", env=env) as proc:
        wait_for_a_record(proc, out, good.name, timeout=120)
        lock = RunDir(good).live_lock()
        assert lock is not None
        os.killpg(os.getpgid(int(lock["pid"])), signal.SIGKILL)  # the worker's whole process group
        assert proc.wait(timeout=60) == 1  # the sweep goes on: it ends with failed cells
    book = {c["name"]: c for c in json.loads((out / "sweep.json").read_text())["cells"]}
    bad = book["orig-a__a__ddim__concept"]
    assert bad["status"] == "failed" and bad["exit_code"] == 2 and "empty" in bad["error"]
    assert book[good.name]["status"] == "failed" and "signal 9" in book[good.name]["error"]
    n_before = len(RunDir(good).done_ids())
    assert 1 <= n_before < 6 and RunDir(good).status() == "incomplete"
    assert main(["--batch", "--sweep", str(sweep), "--out", str(out), "--workers", "1"]) == 1  # orig-a still fails
    rd = RunDir(good)
    assert rd.read_summary()["complete"] is True
    lines = [json.loads(ln) for ln in (good / "results.jsonl").read_text().splitlines()]
    ids = [r["item_id"] for r in lines]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 6 and all(r["status"] == "ok" for r in lines)
    book = {c["name"]: c for c in json.loads((out / "sweep.json").read_text())["cells"]}
    assert book[good.name]["status"] == "finished" and book["orig-a__a__ddim__concept"]["status"] == "failed"


def test_report_of_a_sweep_has_the_grid(grid, tmp_path, capsys) -> None:
    """--report SWEEP_DIR: every cell's run is in the report, and the erasure × concept tables and
    sweep_grid.csv hold each cell's own summary numbers."""
    import csv

    pytest.importorskip("matplotlib")
    _, out, _ = grid
    rep = tmp_path / "rep"
    assert main(["--batch", "--report", str(out), "--out", str(rep)]) == 0
    md = (rep / "report.md").read_text()
    assert "## Sweep tiny: the grid (figure 5)" in md and "4 cell(s)" in md and "4 with a run" in md
    assert "### base tiny · ddim" in md and "### base tiny · fpi" in md
    summaries = {c: RunDir(out / c).read_summary() for c in CELLS}
    ddim = md.split("### base tiny · ddim", 1)[1].split("###", 1)[0]
    psnr_table = ddim.split("Mean erased-set PSNR (dB):", 1)[1].split("\n\n", 2)[1]
    assert psnr_table.splitlines()[0] == "| erasure \\ concept | a | b |"
    got = {ln.split(" | ")[0].lstrip("| "): ln for ln in psnr_table.splitlines()[2:]}
    assert set(got) == {"none (orig-a)", "orig-b"}
    want_a = summaries["orig-a__a__ddim__concept"]["sets"]["erased"]["psnr"]["mean"]
    assert f"| {want_a:.4g} | – |" in got["none (orig-a)"]
    rows = list(csv.DictReader((rep / "sweep_grid.csv").open()))
    assert [r["cell"] for r in rows] == CELLS
    for r in rows:
        s = summaries[r["cell"]]
        rd = s.get("relative_distance")  # None with one item per set (no EMD of one value)
        assert (r["relative_distance"] == "") if rd is None else float(r["relative_distance"]) == pytest.approx(rd)
        assert float(r["erased_nll_mean"]) == pytest.approx(s["sets"]["erased"]["nll"]["mean"], rel=1e-9)
        assert r["status"] == "finished" and r["erasure"] in ("none", "")
    assert (rep / "figures" / "sweep_tiny_tiny_ddim.png").stat().st_size > 1000
    assert main(["--batch", "--report", str(tmp_path / "nothing"), "--out", str(rep)]) == 2
    assert "not a run or sweep directory" in capsys.readouterr().err


def test_a_second_sweep_command_on_a_busy_sweep_dir_is_refused(tiny_pipe_dir, tmp_path, capsys) -> None:
    """sweep.pid: while one sweep command drives SWEEP_DIR another exits 3 and changes nothing;
    after the first is stopped (SIGINT, resumable) the folder is free again."""
    sweep = write_sweep(tmp_path, tiny_pipe_dir, methods='["ddim"]', steps=3, items=3)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with sweep_command(sweep, out, "--workers", "1", env=env) as proc:
        wait_for_a_record(proc, out, timeout=120)
        assert (out / "sweep.pid").is_file()
        assert main(["--batch", "--sweep", str(sweep), "--out", str(out)]) == 3
        assert f"sweep {out} is being run by process {proc.pid}" in capsys.readouterr().err
        assert json.loads((out / "sweep.json").read_text())["executor"]["pid"] == proc.pid
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    assert not (out / "sweep.pid").exists()
    assert main(["--batch", "--sweep", str(sweep), "--out", str(out), "--workers", "1"]) == 0
