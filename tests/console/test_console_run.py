"""The Run screen: the table fills from a run directory, the preview follows the cursor, the
histograms hold the run's values and the N(0, I) law, the summary and errors show the files'
numbers, and a live run's new records appear in place."""
from __future__ import annotations

import json
import math
import os

import numpy as np

from memtui.screens.run import RunScreen
from memtui.widgets.histogram import Histogram
from memtui.widgets.items_table import ItemsTable
from memtui.widgets.preview import PreviewPair

from tests.console.console_helpers import concept_records, make_app, make_run, plain, settle, wait_until


async def open_run(pilot, name: str) -> RunScreen:
    await settle(pilot)
    table = pilot.app.screen.query_one("#runs-table")
    names = [table.get_row_at(i)[1] for i in range(table.row_count)]
    table.move_cursor(row=names.index(name))
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(pilot.app.screen, RunScreen)
    return pilot.app.screen


async def test_run_view_fills_from_run_dir(config, concept_run):
    records = [json.loads(line) for line in (concept_run / "results.jsonl").read_text().splitlines()]
    summary = json.loads((concept_run / "summary.json").read_text())
    app = make_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, "esd-parachute")
        table = screen.query_one(ItemsTable)
        assert table.row_count == len(records) == 8
        assert table.ids_in_order() == [r["item_id"] for r in records]
        r0 = records[0]
        row = table.get_row(r0["item_id"])
        assert row[0] == r0["item_id"] and row[1] == "erased"
        # a ddim run: its seed-only PSNR is its PSNR, so the column is not shown
        assert str(row[2]) == f"{r0['psnr']:.2f}" and str(row[3]) == f"{r0['nll']:.1f}"
        status = plain(screen.query_one("#run-status"))
        assert "8/8 items" in status and "1 failed" in status

        # preview follows the cursor
        pair = screen.query_one(PreviewPair)
        assert pair.shown[0] == "erased-000"
        await pilot.press("down")
        await pilot.pause()
        assert pair.shown[0] == "erased-001"
        assert pair.shown[1].endswith("images/erased-001.query.png")
        assert pair.shown[2].endswith("images/erased-001.recon.png")

        # histograms: the run's finite values per set, and the law for d = 4*8*8
        nll = screen.query_one("#nll-hist", Histogram)
        ok = [r for r in records if r["status"] == "ok"]
        assert nll.series["erased"] == [r["nll"] for r in ok if r["set"] == "erased"]
        assert nll.series["reference"] == [r["nll"] for r in ok if r["set"] == "reference"]
        d = 256
        assert nll.law is not None
        assert math.isclose(nll.law[0], d * (1 + math.log(2 * math.pi)) / 2, rel_tol=1e-12)
        assert math.isclose(nll.law[1], math.sqrt(d / 2), rel_tol=1e-12)
        psnr = screen.query_one("#psnr-hist", Histogram)
        assert sorted(psnr.series["erased"]) == sorted(r["psnr"] for r in ok if r["set"] == "erased")

        # summary and errors show the files' values
        text = plain(screen.query_one("#summary"))
        assert f"{summary['relative_distance']:.3f}" in text
        assert f"{summary['sets']['erased']['psnr']['mean']:.2f}" in text
        assert "cannot identify image file" in plain(screen.query_one("#errors"))

        # sort by PSNR (s cycles id -> psnr), then reverse
        await pilot.press("s")
        await pilot.pause()
        by_psnr = [r["item_id"] for r in sorted(ok, key=lambda r: r["psnr"])]
        failed = [r["item_id"] for r in records if r["status"] != "ok"]
        assert table.ids_in_order() == by_psnr + failed
        await pilot.press("r")
        await pilot.pause()
        assert table.ids_in_order()[0] == failed[0]
        await pilot.press("escape")
        await pilot.pause()
        assert type(app.screen).__name__ == "BrowseScreen"


async def test_live_run_rows_appear_in_place(config, runs_dir):
    recs = concept_records(3, 3)
    run = make_run(runs_dir, "live", {"analysis": "concept", "method": "ddim"}, recs[:2],
                   finished=False, total=6)
    (run / "console.pid").write_text(str(os.getpid()))  # a live process "owns" the run
    app = make_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        screen = None
        assert await wait_until(pilot, lambda: isinstance(app.screen, RunScreen))
        screen = app.screen
        table = screen.query_one(ItemsTable)
        assert await wait_until(pilot, lambda: table.row_count == 2)
        assert "running" in plain(screen.query_one("#run-title"))
        with open(run / "results.jsonl", "a") as f:
            for rec in recs[2:]:
                f.write(json.dumps(rec) + "\n")
        assert await wait_until(pilot, lambda: table.row_count == 6)
        assert table.ids_in_order() == [r["item_id"] for r in recs]
        # a record that updates an item in place (a retried item) changes its cells, not the count;
        # while only half of its line is written, nothing changes
        line = json.dumps({**recs[0], "psnr": 33.0}) + "\n"
        with open(run / "results.jsonl", "a") as f:
            f.write(line[:20])
        await pilot.pause(0.6)
        assert str(table.get_row("erased-000")[2]) == f"{recs[0]['psnr']:.2f}"
        with open(run / "results.jsonl", "a") as f:
            f.write(line[20:])
        assert await wait_until(pilot, lambda: str(table.get_row("erased-000")[2]) == "33.00")
        assert table.row_count == 6
        (run / "console.pid").unlink()
        with open(run / "events.jsonl", "a") as f:
            f.write(json.dumps({"ts": "t", "type": "finished"}) + "\n")
        assert await wait_until(pilot, lambda: "finished" in plain(screen.query_one("#run-title")))
        bar = screen.query_one("#run-progress")
        assert bar.total == 6 and bar.progress == 6
        np.testing.assert_allclose(sorted(screen.query_one("#psnr-hist", Histogram).series["erased"]),
                                   sorted([33.0] + [r["psnr"] for r in recs[1:3]]))


async def test_two_part_method_shows_its_seed_only_psnr(config, runs_dir):
    """An EDICT run's reconstruction uses its second latent: the table shows the seed-only PSNR
    beside the PSNR, and the summary pane a seed-only column."""
    from tests.console.console_helpers import concept_summary

    recs = concept_records(error_at=2)
    for i, r in enumerate(recs):
        if r["status"] == "ok":
            r["psnr_seed_only"] = 8.0 + i
    summary = concept_summary(recs, 1.3)
    for s in summary["sets"].values():
        s["psnr_seed_only"] = {"count": 3, "mean": 9.5, "std": 0.5}
    make_run(runs_dir, "edict-parachute", {"analysis": "concept", "method": "edict", "base": "/models/sd14",
                                           "erased": "/data/parachute", "reference": "/data/coco"}, recs, summary)
    app = make_app(config)
    async with app.run_test(size=(140, 36)) as pilot:
        screen = await open_run(pilot, "edict-parachute")
        table = screen.query_one(ItemsTable)
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[2:5] == ["PSNR dB", "seed-only", "NLL"]
        row = table.get_row(recs[0]["item_id"])
        assert str(row[3]) == "8.00" and str(row[4]) == f"{recs[0]['nll']:.1f}"
        err = table.get_row(recs[2]["item_id"])
        assert str(err[3]) == "-"
