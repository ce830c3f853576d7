"""One broken run does not hide the others (issue 12 item 7): ``find_runs`` returns every run, a
damaged one with status ``broken`` and the reason in ``problem``, and the Browse list shows it."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from memtui import jobs
from memtui.engine.runs.spec import RunSpec
from memtui.engine.runs.store import RunDir


def _run(path: Path) -> Path:
    rd = RunDir.create(path, RunSpec(analysis="concept", base="x"))
    rd.event("started", total=2)
    rd.append_result({"item_id": "a", "set": "erased", "status": "ok", "psnr": 20.0})
    rd.event("finished")
    rd.write_summary({"analysis": "concept", "status": "finished"})
    return rd.path


@pytest.fixture
def runs(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = runs_dir
    for name in ("a-good", "b-resultsdir", "c-summarylist", "d-speclist", "e-unreadable", "f-specdir", "z-good"):
        _run(root / name)
    (root / "b-resultsdir" / "results.jsonl").unlink()
    (root / "b-resultsdir" / "results.jsonl").mkdir()
    (root / "c-summarylist" / "summary.json").write_text("[1, 2]\n")
    (root / "d-speclist" / "spec.json").write_text('["concept"]\n')
    (root / "f-specdir" / "spec.json").unlink()
    (root / "f-specdir" / "spec.json").mkdir()
    real = RunDir.read_events

    def read_events(self: RunDir) -> list:
        if self.path.name == "e-unreadable":  # as a run of another user (tests may run as root)
            raise PermissionError(13, "Permission denied", str(self.path / "events.jsonl"))
        return real(self)

    monkeypatch.setattr(RunDir, "read_events", read_events)
    return root


def test_every_run_listed_broken_ones_with_their_reason(runs: Path) -> None:
    found = {r.name: r for r in jobs.find_runs(runs)}
    assert sorted(found) == ["a-good", "b-resultsdir", "c-summarylist", "d-speclist", "e-unreadable",
                             "f-specdir", "z-good"]
    for good in ("a-good", "z-good"):
        assert found[good].status == "finished" and found[good].problem is None and found[good].done == 1
    reasons = {"b-resultsdir": "results.jsonl", "c-summarylist": "summary.json", "d-speclist": "spec.json",
               "e-unreadable": "Permission denied", "f-specdir": "spec.json"}
    for name, why in reasons.items():
        r = found[name]
        assert r.status == "broken", name
        assert r.problem and why in r.problem, (name, r.problem)
        r.progress_text(), r.headline(), r.analysis, r.method  # usable without raising
        assert not r.live


def test_browse_row_shows_broken_run_and_reason(runs: Path) -> None:
    from memtui.screens.browse import STATUS_STYLE, BrowseScreen

    found = {r.name: r for r in jobs.find_runs(runs)}
    row = BrowseScreen.run_row(SimpleNamespace(marked=set()), found["c-summarylist"])  # type: ignore[arg-type]
    assert str(row[2]) == "broken" and row[2].style == STATUS_STYLE["broken"]
    assert "summary.json" in str(row[-1])
    good = BrowseScreen.run_row(SimpleNamespace(marked=set()), found["a-good"])  # type: ignore[arg-type]
    assert str(good[2]) == "finished"


async def test_console_lists_and_opens_broken_runs(config, runs: Path) -> None:
    from tests.console.console_helpers import make_app, settle

    from memtui.screens.run import RunScreen

    app = make_app(config)
    async with app.run_test(size=(160, 36)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#runs-table")
        rows = {table.get_row_at(i)[1]: table.get_row_at(i) for i in range(table.row_count)}
        assert len(rows) == 7 and str(rows["b-resultsdir"][2]) == "broken"
        assert "results.jsonl" in str(rows["b-resultsdir"][-1]) and str(rows["a-good"][2]) == "finished"
        assert not app.screen.query_one("#runs-hint").display
        for name in ("b-resultsdir", "c-summarylist", "d-speclist"):
            names = [table.get_row_at(i)[1] for i in range(table.row_count)]
            table.move_cursor(row=names.index(name))
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, RunScreen), name  # opens, does not crash the console
            await pilot.press("escape")
            await settle(pilot)
            table = app.screen.query_one("#runs-table")
