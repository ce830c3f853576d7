"""A real run launched from the New-run screen on the tiny model: it runs in its own process
(the ``memtui --batch`` code path), the Run screen follows it live to the end, and the table holds
every item with the values the runner wrote."""
from __future__ import annotations

import json
import os
import signal

import pytest

from tests.console.console_helpers import make_app, plain, settle, wait_until, write_png

from memtui import jobs
from memtui.screens.new_run import NewRunScreen
from memtui.screens.run import RunScreen
from memtui.widgets.items_table import ItemsTable


def tiny_dataset(root, n: int, seed: int):
    root.mkdir(parents=True)
    rows = ["file,caption"]
    for i in range(n):
        write_png(root / f"img{i}.png", seed + i)
        rows.append(f"img{i}.png,a tiny picture {i}")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.slow
async def test_launch_real_run_from_new_run_screen(tmp_path, config, runs_dir, tiny_pipe_dir):
    erased = tiny_dataset(tmp_path / "erased", 2, 10)
    reference = tiny_dataset(tmp_path / "reference", 2, 50)
    app = make_app(config)
    run_dir = runs_dir / "tiny-ddim"
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("n")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, NewRunScreen)
            for fid, value in (("name", "tiny-ddim"), ("base", str(tiny_pipe_dir)), ("erased", str(erased)),
                               ("reference", str(reference)), ("steps", "5"), ("batch_size", "2")):
                screen.query_one(f"#f-{fid}").value = value
            screen.query_one("#f-method").value = "ddim"
            await pilot.press("f5")
            assert await wait_until(pilot, lambda: isinstance(app.screen, RunScreen), limit=300), \
                plain(screen.query_one("#problems"))
            run_screen = app.screen
            assert run_screen.run_dir == run_dir
            table = run_screen.query_one(ItemsTable)
            finished = await wait_until(
                pilot, lambda: run_screen.status == "finished" and table.row_count == 4, limit=900, step=0.2)
            log = "\n".join(jobs.read_log_tail(run_dir, 30))
            assert finished, f"status {run_screen.status}, {table.row_count} rows; console.log:\n{log}"
            results = {json.loads(line)["item_id"]: json.loads(line)
                       for line in (run_dir / "results.jsonl").read_text().splitlines()}
            assert sorted(table.records) == sorted(results)
            for item_id, rec in results.items():
                assert rec["status"] == "ok"
                assert str(table.get_row(item_id)[2]) == f"{rec['psnr']:.2f}"
            summary = json.loads((run_dir / "summary.json").read_text())
            await pilot.press("4")
            assert f"{summary['relative_distance']:.3f}" in plain(run_screen.query_one("#summary"))
            bar = run_screen.query_one("#run-progress")
            assert bar.progress == bar.total == 4
            assert (runs_dir / ".launch" / "tiny-ddim.toml").exists()
    finally:
        pid = jobs.read_pid(run_dir)
        if pid is not None and jobs.pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)


def test_the_forms_lora_scale_reaches_the_spec_and_is_validated():
    from memtui import launch
    from memtui.engine.runs.spec import RunSpec

    assert launch.spec_from_form({"base": "b", "lora_scale": "0.25"})["lora_scale"] == 0.25
    assert "lora_scale" not in launch.spec_from_form({"base": "b", "lora_scale": ""})  # the spec default, 1
    bad = launch.spec_from_form({"base": "b", "lora_scale": "lots"})
    assert any(p.startswith("lora_scale must be a finite number") for p in RunSpec.from_dict(bad, validate=False).problems())
