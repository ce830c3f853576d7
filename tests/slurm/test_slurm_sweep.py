"""The ``slurm`` executor against a real one-node Slurm (tests/slurm/conftest.py): a 2×2 sweep on the
tiny pipeline submitted as a job array through submitit finishes with every cell equal to the same
cell run directly (PSNR/NLL to 1e-6); a cell whose job is ``scancel``-ed mid-run is recorded
cancelled, stays resumable and ends identical after a re-run."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from memtui.cli import main
from memtui.engine.compute.run import run_spec
from memtui.engine.runs.spec import RunSpec
from memtui.engine.runs.store import RunDir

from tests.cli.test_batch_sweep import CELLS, write_sweep
from tests.helpers import read_ok_records, sweep_command, wait_for_a_record

pytestmark = [pytest.mark.usefixtures("_one_thread"), pytest.mark.slow]

SLURM_TABLE = """
executor = "slurm"
workers = 2

[slurm]
cpus_per_task = 1
timeout_min = 30
job_name = "memtui-test"
"""


def with_slurm(sweep: Path) -> Path:
    text = sweep.read_text()
    head, rest = text.split("\n[spec]", 1)
    sweep.write_text(head + SLURM_TABLE + "\n[spec]" + rest)
    return sweep


def one_cell_sweep(tmp_path: Path, pipe: Path) -> Path:
    """A slurm sweep of the one cell orig-b × ddim, 3 + 3 items, 4 steps."""
    sweep = with_slurm(write_sweep(tmp_path, pipe, methods='["ddim"]', steps=4, items=3))
    sweep.write_text(sweep.read_text() + '\n[[cell]]\nbase = "tiny"\ncheckpoint = "orig-b"\nmethod = "ddim"\n'
                                         'analysis = "concept"\n')
    return sweep


CELL = "orig-b__b__ddim__concept"


def assert_equal_to_direct(run_dir: Path, spec: dict, scratch: Path) -> None:
    direct = RunDir(scratch / run_dir.name)
    run_spec(RunSpec.from_dict(spec), direct)
    got, want = RunDir(run_dir).read_results(), direct.read_results()
    assert list(got) == list(want) and want
    for iid in want:
        assert got[iid]["status"] == want[iid]["status"] == "ok"
        for key in ("psnr", "nll"):
            assert got[iid][key] == pytest.approx(want[iid][key], abs=1e-6), (run_dir.name, iid, key)


@pytest.fixture()
def one_thread_env():
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # exported to the jobs (sbatch --export=ALL)
    yield
    if old is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old


def test_slurm_grid_equals_direct_runs(slurm_cluster, tiny_pipe_dir, tmp_path, one_thread_env, capsys) -> None:
    sweep = with_slurm(write_sweep(tmp_path, tiny_pipe_dir))
    out = tmp_path / "out"
    assert main(["--batch", "--sweep", str(sweep), "--out", str(out)]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "with the slurm executor" in err and "queued (job " in err
    book = json.loads((out / "sweep.json").read_text())
    assert book["executor"]["name"] == "slurm"
    assert [c["name"] for c in book["cells"]] == CELLS
    job_ids = [c["job_id"] for c in book["cells"]]
    assert all(c["status"] == "finished" and c["exit_code"] == 0 for c in book["cells"])
    # one job array: <array id>_<task index>
    assert len({j.split("_")[0] for j in job_ids}) == 1 and sorted(j.split("_")[1] for j in job_ids) == list("0123")
    for cell in book["cells"]:
        assert RunDir(out / cell["name"]).read_summary()["complete"] is True
        assert_equal_to_direct(out / cell["name"], cell["spec"], tmp_path / "direct")
        assert "slurm job " in (out / ".logs" / f"{cell['name']}.log").read_text()
    assert main(["--batch", "--sweep-status", str(out)]) == 0
    status = capsys.readouterr().out
    assert all(f"job {j}" in status for j in job_ids) and "4 cell(s): 4 finished" in status


def test_scancel_mid_run_then_rerun_ends_identical(slurm_cluster, tiny_pipe_dir, tmp_path, one_thread_env) -> None:
    sweep = one_cell_sweep(tmp_path, tiny_pipe_dir)
    out = tmp_path / "out"
    cell = out / CELL
    with sweep_command(sweep, out) as proc:
        wait_for_a_record(proc, out, CELL)
        job = json.loads((out / "sweep.json").read_text())["cells"][0]["job_id"]
        assert job
        subprocess.run(["scancel", job], check=True)
        code = proc.wait(timeout=120)
        err = proc.stderr.read().decode()
        assert code == 1, err
    book = json.loads((out / "sweep.json").read_text())["cells"][0]
    assert book["status"] == "cancelled", (book, err)
    rd = RunDir(cell)
    n_before = len(rd.done_ids())
    assert 1 <= n_before < 6 and rd.live_lock() is None
    assert rd.status() == "cancelled"  # stopped by SIGTERM after its current batch, resumable
    assert main(["--batch", "--sweep", str(sweep), "--out", str(out)]) == 0
    book = json.loads((out / "sweep.json").read_text())["cells"][0]
    assert book["status"] == "finished" and book["job_id"] != job
    assert len(read_ok_records(cell)) == 6
    assert_equal_to_direct(cell, book["spec"], tmp_path / "direct")


def test_preempted_task_is_requeued_and_resumes(slurm_cluster, tiny_pipe_dir, tmp_path, one_thread_env) -> None:
    """SIGUSR2 is what Slurm sends before a time limit or a preemption (``--signal=USR2@N``):
    submitit's handler calls CellJob.checkpoint (the cell stops after its batch) and requeues the
    task under the same job id; the requeued task resumes the run directory and finishes it."""
    sweep = one_cell_sweep(tmp_path, tiny_pipe_dir)
    out = tmp_path / "out"
    cell = out / CELL
    with sweep_command(sweep, out) as proc:
        wait_for_a_record(proc, out, CELL)
        job = json.loads((out / "sweep.json").read_text())["cells"][0]["job_id"]
        subprocess.run(["scancel", "-s", "USR2", job], check=True)
        assert proc.wait(timeout=400) == 0, proc.stderr.read().decode()
    book = json.loads((out / "sweep.json").read_text())["cells"][0]
    assert book["status"] == "finished" and book["job_id"] == job
    events = [e["type"] for e in RunDir(cell).read_events()]
    assert "cancelled" in events and "resumed" in events and events[-1] == "finished", events
    assert len(read_ok_records(cell)) == 6
    assert_equal_to_direct(cell, book["spec"], tmp_path / "direct")


def test_a_restarted_sweep_command_follows_its_running_tasks(slurm_cluster, tiny_pipe_dir, tmp_path,
                                                            one_thread_env, capsys) -> None:
    """The sweep command is killed (an SSH session dropped on the login node) while its task runs on
    the cluster; running it again follows that same job instead of submitting the cell again."""
    sweep = one_cell_sweep(tmp_path, tiny_pipe_dir)
    out = tmp_path / "out"
    cell = out / CELL
    with sweep_command(sweep, out) as proc:
        wait_for_a_record(proc, out, CELL)
        job = json.loads((out / "sweep.json").read_text())["cells"][0]["job_id"]
        proc.kill()  # the sweep command only: its Slurm task goes on
        proc.wait()
        assert main(["--batch", "--sweep", str(sweep), "--out", str(out)]) == 0
    assert f"following job {job}" in capsys.readouterr().err
    book = json.loads((out / "sweep.json").read_text())["cells"][0]
    assert book["status"] == "finished" and book["job_id"] == job
    types = [e["type"] for e in RunDir(cell).read_events()]
    assert types.count("started") == 1 and "resumed" not in types and types[-1] == "finished", types
    assert [p.name for p in (out / ".slurm").iterdir() if not p.name.startswith(".")] == [job.split("_")[0]]  # one job
    assert_equal_to_direct(cell, book["spec"], tmp_path / "direct")
