"""The console's report export (issue 7) runs the same writer as ``memtui --batch --report``."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from tests.console.console_helpers import make_app, settle, wait_until

from memtui.export import report_command, report_dir_for
from memtui.screens.compare import CompareScreen

pytest.importorskip("matplotlib")


def test_report_location_and_command(tmp_path: Path) -> None:
    a, b, c = (tmp_path / "runs" / n for n in ("esd", "uce", "fmn"))
    assert report_dir_for([a]) == tmp_path / "runs" / "reports" / "esd"
    assert report_dir_for([a, b, c]) == tmp_path / "runs" / "reports" / "compare-esd-and-2-more"
    out = report_dir_for([a])
    assert report_command([a], out) == [sys.executable, "-m", "memtui", "--batch", "--report", str(a), "--out", str(out)]


@pytest.mark.slow
async def test_compare_exports_report_with_the_runs_numbers(config, concept_run: Path) -> None:
    app = make_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        await pilot.press("e")
        report = report_dir_for([concept_run]) / "report.md"
        assert await wait_until(pilot, report.is_file, limit=1200, step=0.1), "report.md was not written"
    text = report.read_text()
    assert "esd-parachute" in text
    # every number of the run's summary that the report tabulates comes from summary.json
    summary = json.loads((concept_run / "summary.json").read_text())
    with open(report.parent / "runs.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["relative_distance"]) == pytest.approx(summary["relative_distance"])
