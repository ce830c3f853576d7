"""A run's whole life from the console's keys (issue 17, item 1): resume a cancelled run for real
(a ``memtui --batch`` session that finishes it), restart after a confirmation (old contents kept),
duplicate into a filled New-run form, delete after a confirmation naming what goes (and the refusal
of a running run), open the log, copy the batch command; and no ETA on a stopped run."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from memtui import jobs, lifecycle
from memtui.screens.confirm import ConfirmScreen
from memtui.screens.new_run import NewRunScreen
from memtui.screens.run import RunScreen
from memtui.widgets.items_table import ItemsTable

from tests.console.console_helpers import concept_records, make_app, make_run, plain, settle, wait_until
from tests.helpers import write_coco, write_official


async def select_run(pilot, name: str) -> None:
    await settle(pilot)
    table = pilot.app.screen.query_one("#runs-table")
    names = [table.get_row_at(i)[1] for i in range(table.row_count)]
    table.move_cursor(row=names.index(name))
    await pilot.pause()


@pytest.fixture()
def cancelled_run(runs_dir: Path, tiny_pipe_dir: Path, tmp_path: Path) -> Path:
    """A real tiny-model concept run (3 + 3 items, DDIM 3 steps) cancelled after its first batch."""
    from memtui.engine.compute.run import run_spec
    from memtui.engine.runs.spec import RunSpec

    spec = RunSpec(base=str(tiny_pipe_dir), erased=str(write_official(tmp_path / "erased", 3)),
                   reference=str(write_coco(tmp_path / "coco", [1, 2, 3])), method="ddim", steps=3,
                   batch_size=2, device="cpu")
    stop = threading.Event()
    out = runs_dir / "tiny"
    s = run_spec(spec, out, progress=lambda d, n, r: stop.set(), cancel=stop)
    assert s["status"] == "cancelled"
    return out


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]


async def test_resume_from_the_list_finishes_the_run(config, cancelled_run):
    before = {r["item_id"] for r in _records(cancelled_run)}
    assert 0 < len(before) < 6
    app = make_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        await select_run(pilot, "tiny")
        await pilot.press("u")
        assert await wait_until(pilot, lambda: jobs.run_status(cancelled_run) == "finished", limit=1200)
        table = pilot.app.screen.query_one("#runs-table")  # the list rescans every 2 s
        assert await wait_until(pilot, lambda: "finished" in str(table.get_row(str(cancelled_run))[2]), limit=100)
    recs = _records(cancelled_run)
    assert sorted(r["item_id"] for r in recs) == sorted({r["item_id"] for r in recs})  # each item once
    assert len(recs) == 6 and before <= {r["item_id"] for r in recs}
    assert (cancelled_run / jobs.LOG_FILE).stat().st_size > 0  # the session's output went to its log
    assert json.loads((cancelled_run / "summary.json").read_text())["complete"] is True


async def test_resume_refuses_a_finished_run_and_names_restart(config, concept_run):
    app = make_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        await select_run(pilot, "esd-parachute")
        notes: list[str] = []
        pilot.app.screen.notify = lambda msg, **k: notes.append(str(msg))  # type: ignore[method-assign]
        await pilot.press("u")
        await pilot.pause()
    assert notes and "nothing to resume" in notes[0] and "restart" in notes[0]
    assert not (concept_run / jobs.PID_FILE).exists()  # nothing was started


async def test_restart_asks_first_and_keeps_the_old_contents(config, cancelled_run):
    app = make_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await _open(pilot, "tiny")
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfirmScreen)
        assert ".old-" in plain(pilot.app.screen.query_one("#confirm-detail"))
        await pilot.press("n")  # no: nothing happens
        await pilot.pause()
        assert pilot.app.screen is screen and not list(cancelled_run.glob(".old-*"))
        await pilot.press("R")
        await pilot.pause()
        await pilot.press("y")
        assert await wait_until(pilot, lambda: jobs.run_status(cancelled_run) == "finished", limit=1200)
        assert await wait_until(pilot, lambda: screen.query_one(ItemsTable).row_count == 6, limit=100)
    old = list(cancelled_run.glob(".old-*"))
    assert len(old) == 1 and (old[0] / "results.jsonl").is_file()
    assert len(_records(cancelled_run)) == 6


async def _open(pilot, name: str) -> RunScreen:
    await select_run(pilot, name)
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(pilot.app.screen, RunScreen)
    return pilot.app.screen


async def test_delete_confirms_naming_what_goes_and_refuses_a_running_run(config, runs_dir, concept_run):
    live = make_run(runs_dir, "live-one", {"analysis": "concept", "method": "ddim"}, concept_records(1, 1),
                    finished=False, total=10)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    (live / jobs.PID_FILE).write_text(str(sleeper.pid))
    try:
        app = make_app(config)
        async with app.run_test(size=(120, 36)) as pilot:
            notes: list[str] = []
            await select_run(pilot, "live-one")
            pilot.app.screen.notify = lambda msg, **k: notes.append(str(msg))  # type: ignore[method-assign]
            await pilot.press("D")
            await pilot.pause()
            assert not isinstance(pilot.app.screen, ConfirmScreen)
            assert notes and "is running" in notes[-1] and "cancel it" in notes[-1]
            assert live.is_dir()

            await select_run(pilot, "esd-parachute")
            await pilot.press("D")
            await pilot.pause()
            assert isinstance(pilot.app.screen, ConfirmScreen)
            detail = plain(pilot.app.screen.query_one("#confirm-detail"))
            n_files = sum(1 for p in concept_run.rglob("*") if p.is_file())
            assert f"{n_files} files" in detail and "results.jsonl" in detail
            await pilot.press("escape")
            await pilot.pause()
            assert concept_run.is_dir()
            await pilot.press("D")
            await pilot.pause()
            await pilot.press("y")
            assert await wait_until(pilot, lambda: not concept_run.exists())
            await settle(pilot)
            table = pilot.app.screen.query_one("#runs-table")
            assert [table.get_row_at(i)[1] for i in range(table.row_count)] == ["live-one"]
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_duplicate_opens_the_form_filled_from_the_spec(config, cancelled_run):
    spec = json.loads((cancelled_run / "spec.json").read_text())
    app = make_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await select_run(pilot, "tiny")
        await pilot.press("d")
        await settle(pilot)
        form = pilot.app.screen
        assert isinstance(form, NewRunScreen) and "a copy of tiny" in plain(form.query_one(".title-line"))
        values = form.values()
        assert values["base"] == spec["base"] and values["erased"] == spec["erased"]
        assert values["method"] == "ddim" and values["steps"] == "3" and values["batch_size"] == "2"
        assert values["lora_scale"] == "1.0" and form.carry["lora_fuse"] is True
        assert values["name"] != "tiny"  # a fresh name: the copy never overwrites the original
        assert form.carry["seed"] == spec["seed"] and form.carry["device"] == "cpu"


async def test_copy_command_and_log(config, cancelled_run):
    app = make_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        await select_run(pilot, "tiny")
        await pilot.press("y")
        await pilot.pause()
        expected = lifecycle.shell_command(cancelled_run)
        assert pilot.app.clipboard == expected
        assert expected in pilot.app.messages[-1]  # also in the console's log
        assert expected.split() == ["memtui", "--batch", "--spec", str(cancelled_run / "spec.json"),
                                    "--out", str(cancelled_run)]
        await pilot.press("l")
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, RunScreen)
        assert screen.query_one("#run-tabs").active == "log-tab"


async def test_a_stopped_run_shows_no_eta(config, cancelled_run):
    app = make_app(config, show_eta=True)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await _open(pilot, "tiny")
        assert await wait_until(pilot, lambda: screen.query_one(ItemsTable).row_count > 0)
        await settle(pilot)
        etas = list(screen.query("#eta"))
        assert etas and not any(e.display for e in etas)
        assert "cancelled" in plain(screen.query_one("#run-title"))


async def test_every_lifecycle_action_has_a_key_a_palette_entry_and_a_help_line(config, concept_run):
    from memtui.app import ScreenActions
    from memtui.screens.help import help_rows

    wanted = {"Resume run": "u", "Restart run": "R", "Duplicate run": "d", "Delete run": "D", "Run log": "l",
              "Copy batch command": "y"}
    app = make_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        for screen in (pilot.app.screen, await _open(pilot, "esd-parachute")):
            rows = dict((desc, keys) for keys, desc in help_rows(screen))
            assert {d: rows.get(d) for d in wanted} == wanted
            prefix = type(screen).__name__.removesuffix("Screen").lower()
            palette = {text for text, _h, _cb in ScreenActions(screen).commands()}
            assert {f"{prefix}: {d}" for d in wanted} <= palette


async def test_slash_filters_the_runs_list(config, runs_dir, concept_run):
    for name, method in (("uce-church", "uce"), ("nti-church", "nti")):
        make_run(runs_dir, name, {"analysis": "concept", "method": method}, concept_records(1, 1))
    app = make_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        screen = pilot.app.screen
        table = screen.query_one("#runs-table")

        def names() -> list[str]:
            return [str(table.get_row_at(i)[1]) for i in range(table.row_count)]

        assert names() == ["esd-parachute", "nti-church", "uce-church"]
        await pilot.press("slash", *"church")
        await settle(pilot)
        assert names() == ["nti-church", "uce-church"]
        await pilot.press("space", *"UCE")  # every word must match, case-insensitively
        await settle(pilot)
        assert names() == ["uce-church"]
        await pilot.press("enter")  # keeps the filter, back to the list: its keys act on what is shown
        await settle(pilot)
        assert "filter: church UCE (1 of 3 runs" in plain(screen.query_one("#runs-hint"))
        assert screen.selected_run().name == "uce-church"
        await pilot.pause(2.5)  # a rescan keeps the filter
        assert names() == ["uce-church"]
        await pilot.press("escape")
        await settle(pilot)
        assert names() == ["esd-parachute", "nti-church", "uce-church"]
