"""Snapshot tests (pytest-textual-snapshot): each screen at a fixed size with fixed data, no
clocks (ETA off), no GPU line polling, relative paths. Update with ``--snapshot-update`` after
looking at the report."""
from __future__ import annotations

import pytest
from tests.console.console_helpers import concept_records, concept_summary, make_app, make_run, settle

from textual.widgets import Input

from memtui.config import Config


@pytest.fixture
def snap_app(tmp_path, monkeypatch):
    """An app over ``runs/`` (relative, so paths in the screens don't depend on tmp dirs) holding
    two finished concept runs and one memories run."""
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    for name, method, concept, rd, p0, err in (("esd-parachute", "esd", "parachute", 1.25, 20.0, 2),
                                               ("uce-church", "uce", "church", 2.5, 15.0, None)):
        recs = concept_records(4, 4, psnr0=p0, error_at=err)
        make_run(runs, name, {"analysis": "concept", "method": "ddim", "ablated": f"ck/{method}.safetensors",
                              "erased": f"data/{concept}"}, recs, concept_summary(recs, rd))
    mem = [{"item_id": "target-000", "set": "target", "prompt": "a church", "status": "ok", "psnr": 22.0, "nll": 360.0}]
    mem += [{"item_id": f"target-000-mem-{j}", "set": "memory", "target_id": "target-000", "prompt": "a church",
             "status": "ok", "psnr": 20.0 + j, "nll": 350.0 + 5 * j, "distance_to_target": 15.0 + j} for j in range(4)]
    make_run(runs, "memories-church", {"analysis": "memories", "method": "ddim"}, mem, {"d": 256})
    return make_app(Config(runs_dir="runs", path=tmp_path / "config.toml"))


def keys(*presses: str):
    async def run_before(pilot) -> None:
        await settle(pilot)
        for key in presses:
            await pilot.press(key)
            await settle(pilot)
    return run_before


def test_snapshot_browse(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=(100, 30), run_before=keys())


def test_snapshot_browse_80x24(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=keys())


def test_snapshot_run_preview(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=(100, 30), run_before=keys("enter", "down"))


def test_snapshot_run_nll_80x24(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=keys("enter", "2"))


def test_snapshot_run_summary(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=(100, 30), run_before=keys("enter", "4"))


def test_snapshot_new_run_problems(snap_compare, snap_app):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        for fid, value in (("name", "esd-parachute"), ("base", "models/nowhere"), ("erased", "data/none")):
            pilot.app.screen.query_one(f"#f-{fid}").value = value
        await pilot.press("f2")
        await settle(pilot)
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False  # a blinking cursor makes snapshots flaky
        pilot.app.clear_notifications()  # the toast times out after 3 s
        await pilot.pause()
    assert snap_compare(snap_app, terminal_size=(100, 30), run_before=run_before)


def test_snapshot_compare(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=(100, 30), run_before=keys("c"))


def test_snapshot_memories(snap_compare, snap_app):
    async def run_before(pilot) -> None:
        await settle(pilot)
        table = pilot.app.screen.query_one("#runs-table")
        table.move_cursor(row=[table.get_row_at(i)[1] for i in range(table.row_count)].index("memories-church"))
        await pilot.press("m")
        await settle(pilot)
    assert snap_compare(snap_app, terminal_size=(100, 30), run_before=run_before)


def test_snapshot_help_80x24(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=keys("f1"))


def test_snapshot_delete_confirmation_80x24(snap_compare, snap_app):
    """D on a run: the confirmation names the run, its file count, size and top entries."""
    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=keys("D"))


def test_snapshot_duplicate_form_80x24(snap_compare, snap_app):
    """d on a run: the New-run form titled as a copy, filled from the run's spec, under a new name."""
    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=keys("d"))


def test_snapshot_item_detail_80x24(snap_compare, snap_app):
    """Enter on the failed item: its images (half-block), numbers and error."""
    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=keys("enter", "down", "down", "enter"))


def test_snapshot_items_filter_80x24(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=(80, 24),
                        run_before=keys("enter", "slash", *"reference", "enter"))


def test_snapshot_compare_plots_80x24(snap_compare, snap_app):
    assert snap_compare(snap_app, terminal_size=(80, 24), run_before=keys("c", "2"))
