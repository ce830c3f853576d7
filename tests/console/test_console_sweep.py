"""The Sweep screen on a real sweep directory (a 2 checkpoints × 2 methods sweep of the tiny pipeline,
run once per module with ``memtui --batch --sweep``): the grid shows every cell's status and the
headline read from its own run directory, Enter opens a cell's run, the Browse Runs tab lists the
sweep and opens it, and ``x`` sends SIGINT to the live process named by ``sweep.pid``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.cli.test_batch_sweep import write_sweep
from tests.console.console_helpers import make_app, plain, settle, wait_until

from memtui import jobs
from memtui.cli import main
from memtui.engine.runs.sweep import SweepLock


@pytest.fixture(scope="module")
def ran_sweep(tiny_pipe_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished sweep directory (read-only: tests copy it into their runs folder)."""
    import torch

    root = tmp_path_factory.mktemp("console-sweep")
    sweep = write_sweep(root, tiny_pipe_dir)
    out = root / "out"
    old, n = os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    try:
        code = main(["--batch", "--sweep", str(sweep), "--out", str(out), "--workers", "1"])
    finally:
        torch.set_num_threads(n)
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old
    assert code == 0
    return out


@pytest.fixture
def sweep_dir(ran_sweep: Path, runs_dir: Path) -> Path:
    return Path(shutil.copytree(ran_sweep, runs_dir / "grid"))


def cells(sweep_dir: Path) -> list[dict]:
    return json.loads((sweep_dir / "sweep.json").read_text())["cells"]


def grid_text(screen) -> dict[tuple[str, str], str]:
    """(row label, column label) -> the cell's plain text, for every non-empty grid cell."""
    table = screen.query_one("#sweep-grid")
    labels = [str(c.label) for c in table.ordered_columns]
    out = {}
    for r in range(table.row_count):
        row = [str(v) for v in table.get_row_at(r)]
        for label, value in zip(labels[1:], row[1:]):
            if value != "·":
                out[(row[0], label)] = value
    return out


async def open_sweep(pilot, sweep_dir: Path):
    from memtui.screens.sweep import SweepScreen

    await pilot.app.push_screen(SweepScreen(sweep_dir))
    screen = pilot.app.screen
    assert await wait_until(pilot, lambda: len(grid_text(screen)) == 4)
    return screen


async def test_grid_shows_each_cell_status_and_headline(config, sweep_dir):
    from memtui.screens.sweep import row_label

    app = make_app(config)
    async with app.run_test(size=(200, 40)) as pilot:
        await settle(pilot)
        screen = await open_sweep(pilot, sweep_dir)
        grid = grid_text(screen)
        # rows: the erasure with the checkpoint ("none (orig-a)") or the checkpoint ("orig-b");
        # columns: concept · method · analysis
        assert {r for r, _ in grid} == {"none (orig-a)", "orig-b"}
        assert {c for _, c in grid} == {"a · ddim · concept", "a · fpi · concept",
                                        "b · ddim · concept", "b · fpi · concept"}
        for cell in cells(sweep_dir):
            text = grid[(row_label(cell, False), f"{cell['concept']} · {cell['method']} · {cell['analysis']}")]
            run = jobs.read_run(sweep_dir / cell["name"])
            headline = run.headline()
            summary = json.loads((sweep_dir / cell["name"] / "summary.json").read_text())
            assert summary["status"] == "finished" and headline
            assert f"{summary['sets']['erased']['psnr']['mean']:.2f} dB" in headline  # read from its summary
            assert text == f"finished · {headline}"
        title = plain(screen.query_one("#sweep-title"))
        assert "tiny" in title and "executor local" in title and "4 finished" in title
        assert str(sweep_dir) in title.replace("\n", "")


async def test_enter_on_a_cell_opens_its_run(config, sweep_dir):
    from memtui.screens.run import RunScreen

    app = make_app(config)
    async with app.run_test(size=(200, 40)) as pilot:
        await settle(pilot)
        screen = await open_sweep(pilot, sweep_dir)
        table = screen.query_one("#sweep-grid")
        # move to the first non-empty cell of the second row
        row = 1
        col = next(i for i, v in enumerate(table.get_row_at(row)) if i and str(v) != "·")
        table.move_cursor(row=row, column=col)
        expected = screen.by_coord[(screen.rows[row], screen.columns[col - 1])]["path"]
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunScreen))
        assert app.screen.run_dir == expected and expected.parent == sweep_dir
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: app.screen is screen)


async def test_browse_lists_the_sweep_and_opens_it(config, sweep_dir, concept_run):
    from memtui.screens.sweep import SweepScreen

    app = make_app(config)
    async with app.run_test(size=(200, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#runs-table")
        assert await wait_until(pilot, lambda: table.row_count == 2)
        rows = {str(table.get_row_at(i)[1]): [str(v) for v in table.get_row_at(i)] for i in range(2)}
        assert set(rows) == {"esd-parachute", "grid"}
        _, name, status, analysis, method, progress, headline = rows["grid"]
        assert (status, analysis, method, progress, headline) == ("finished", "sweep", "ddim,fpi", "4/4 cells",
                                                                  "4 finished")
        browse = app.screen
        assert [r.name for r in browse.all_runs()] == ["esd-parachute"]  # compare/export see runs only
        table.move_cursor(row=[str(table.get_row_at(i)[1]) for i in range(2)].index("grid"))
        await pilot.press("enter")
        assert await wait_until(pilot, lambda: isinstance(app.screen, SweepScreen))
        assert app.screen.sweep_dir == sweep_dir


SWEEP_HOLDER = """\
import signal, sys, time
from memtui.engine.runs.sweep import SweepLock
signal.signal(signal.SIGINT, lambda *a: sys.exit(130))
SweepLock(sys.argv[1]).acquire_lock()
open(sys.argv[2], "w").write("ready")
time.sleep(60)
"""


async def test_x_sends_sigint_to_the_live_sweep_command(config, sweep_dir, tmp_path):
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", SWEEP_HOLDER, str(sweep_dir), str(ready)],
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        lock = SweepLock(sweep_dir).live_lock()
        assert lock is not None and lock["pid"] == proc.pid
        app = make_app(config)
        async with app.run_test(size=(200, 40)) as pilot:
            await settle(pilot)
            screen = await open_sweep(pilot, sweep_dir)
            assert await wait_until(pilot, lambda: screen.view.pid == proc.pid)
            assert f"running (pid {proc.pid})" in plain(screen.query_one("#sweep-title")).replace("\n", "")
            await pilot.press("x")
            assert proc.wait(timeout=10) == 130  # its SIGINT handler ran
            assert await wait_until(pilot, lambda: screen.view.pid is None, limit=60)
            await pilot.press("x")  # nothing left to stop: a warning, no signal
            await pilot.pause()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_failed_cell_shows_its_error(config, sweep_dir):
    data = json.loads((sweep_dir / "sweep.json").read_text())
    victim = data["cells"][0]
    victim.update(status="failed", error="CUDA out of memory", exit_code=1)
    (sweep_dir / victim["name"] / "summary.json").unlink()  # its run did not finish
    (sweep_dir / "sweep.json").write_text(json.dumps(data))
    app = make_app(config)
    async with app.run_test(size=(200, 40)) as pilot:
        await settle(pilot)
        screen = await open_sweep(pilot, sweep_dir)
        texts = grid_text(screen).values()
        assert sum(t.startswith("failed") for t in texts) == 1
        assert sum(t.startswith("finished") for t in texts) == 3
        errors = plain(screen.query_one("#sweep-errors"))
        assert f"{victim['name']}: CUDA out of memory" in errors
        assert "1 failed" in plain(screen.query_one("#sweep-title")).replace("\n", "")


async def test_R_runs_the_sweep_command_in_the_background(config, sweep_dir):
    from memtui.sweeps import LOG_FILE

    app = make_app(config)
    async with app.run_test(size=(200, 40)) as pilot:
        await settle(pilot)
        await open_sweep(pilot, sweep_dir)
        await pilot.press("R")
        log = sweep_dir / LOG_FILE

        def said_done() -> bool:
            return log.is_file() and "memtui: sweep: 4 finished" in log.read_text(errors="replace")

        # the real `memtui --batch --sweep` on this folder: every cell is finished, so it skips them all
        assert await wait_until(pilot, said_done, limit=600, step=0.1), log.read_text(errors="replace")
        assert "4 finished, 0 to run" in log.read_text()  # it skipped every finished cell
