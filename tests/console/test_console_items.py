"""The Run screen's items at scale and in detail (issue 17, items 2 and 4): Enter opens the item
view (images side by side, the item's numbers, its error, a placeholder for a broken image, the
seed-only image when recorded), the ``/`` filter on the items table, the scanner that re-reads
only changed runs, and the in-place table sync."""
from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

from textual.widgets import DataTable

from memtui import jobs
from memtui.screens.item import ItemScreen, item_images
from memtui.screens.run import RunScreen
from memtui.widgets import graphics
from memtui.widgets.image_panel import HalfBlockImage, ImagePanel
from memtui.widgets.items_table import ItemsTable
from memtui.widgets.tables import sync_table

from tests.console.console_helpers import make_app, plain, settle, wait_until, write_png


async def open_run(pilot, run: Path) -> RunScreen:
    await settle(pilot)
    pilot.app.open_run(run)
    await settle(pilot)
    assert isinstance(pilot.app.screen, RunScreen)
    return pilot.app.screen


def status_text(screen) -> str:
    return plain(screen.query_one("#run-status"))


# ------------------------------------------------------------------------------------ item view
async def test_enter_opens_the_item_with_its_images_numbers_and_error(config, concept_run):
    app = make_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_run(pilot, concept_run)
        table = screen.query_one(ItemsTable)
        first = table.current_id()
        await pilot.press("enter")
        await settle(pilot)
        item = app.screen
        assert isinstance(item, ItemScreen) and item.item_id == first == "erased-000"
        captions = [str(p.caption) for p in item.query(ImagePanel)]
        assert captions == ["query", "reconstruction"]
        assert len(item.query(HalfBlockImage)) == 2  # the default path: half-block cells
        numbers = plain(item.query_one("#item-numbers"))
        rec = table.records["erased-000"]
        assert f"{rec['psnr']:.2f} dB" in numbers and f"{rec['nll']:.2f} nats" in numbers
        law = screen.law
        assert law is not None and f"z = {(rec['nll'] - law[0]) / law[1]:+.2f}" in numbers
        assert not item.query_one("#item-error").display
        # n steps in the table's order to the failed item: its error shows
        await pilot.press("n", "n")
        await settle(pilot)
        assert item.item_id == "erased-002"
        assert item.query_one("#item-error").display
        assert "cannot identify image file" in plain(item.query_one("#item-error"))
        assert "Item erased-002 · 3 of 8" in plain(item.query_one("#item-title"))
        await pilot.press("p")
        await settle(pilot)
        assert item.item_id == "erased-001"
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is screen


async def test_a_broken_image_shows_a_placeholder_with_the_reason(config, concept_run):
    (concept_run / "images" / "erased-000.recon.png").write_bytes(b"not a png")
    (concept_run / "images" / "erased-000.query.png").unlink()
    app = make_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_run(pilot, concept_run)
        await pilot.press("enter")
        await settle(pilot)
        text = " ".join(plain(w) for w in app.screen.query(".image-missing"))
        assert "erased-000.query.png is missing" in text
        assert "erased-000.recon.png cannot be read (UnidentifiedImageError" in text
        assert not app.screen.query(HalfBlockImage)


def test_item_images_follow_the_record_and_stay_in_the_run(tmp_path):
    run = tmp_path / "run"
    write_png(run / "images" / "a.seed_only.png", 3)
    rec = {"item_id": "a", "query": "images/a.query.png", "recon": "images/a.recon.png",
           "seed_only": "images/a.seed_only.png"}
    got = item_images(run, rec)
    assert [c for c, _ in got] == ["query", "reconstruction", "seed-only (DDIM from the seed)"]
    assert got[2][1] == (run / "images" / "a.seed_only.png").resolve()
    escaping = item_images(run, {"item_id": "a", "query": "../../etc/passwd"})
    assert escaping[0] == ("query", None)  # a path leaving the run directory is not opened


async def test_pixels_mode_draws_through_textual_image(config, concept_run):
    app = make_app(config, graphics=graphics.PIXELS)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_run(pilot, concept_run)
        await pilot.press("enter")
        await settle(pilot)
        from textual_image.widget import Image

        assert len(app.screen.query(Image)) == 2 and not app.screen.query(HalfBlockImage)


def test_graphics_choice_keeps_half_blocks_in_tmux_and_without_a_terminal(monkeypatch):
    assert graphics.choose_graphics("auto", {"TMUX": "/tmp/tmux-0/default,1,0"}, tty=True)[0] == graphics.HALFBLOCK
    assert graphics.choose_graphics("auto", {"TERM": "screen-256color"}, tty=True)[0] == graphics.HALFBLOCK
    assert graphics.choose_graphics("auto", {}, tty=False) == (graphics.HALFBLOCK, "not a terminal")
    assert graphics.choose_graphics("halfblock", {}, tty=True)[0] == graphics.HALFBLOCK
    # a terminal that answers for kitty graphics (a stand-in textual_image: no real terminal here)
    tgp, half = type("TGP", (), {}), type("Half", (), {})
    renderable = types.SimpleNamespace(Image=tgp, TGPImage=tgp, SixelImage=type("Sixel", (), {}), HalfcellImage=half)
    fake = types.ModuleType("textual_image")
    fake.renderable = renderable  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "textual_image", fake)
    monkeypatch.setitem(sys.modules, "textual_image.widget", types.ModuleType("textual_image.widget"))
    assert graphics.choose_graphics("auto", {"TERM": "xterm-kitty"}, tty=True) == (
        graphics.PIXELS, "the terminal has kitty graphics")
    renderable.Image = half
    assert graphics.choose_graphics("auto", {"TERM": "xterm"}, tty=True)[0] == graphics.HALFBLOCK
    monkeypatch.setitem(sys.modules, "textual_image", None)  # not installed
    mode, why = graphics.choose_graphics("auto", {"TERM": "xterm"}, tty=True)
    assert mode == graphics.HALFBLOCK and "not installed" in why


# ------------------------------------------------------------------------------------ filter
async def test_slash_filters_the_items_and_escape_clears_then_leaves(config, concept_run):
    app = make_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, concept_run)
        table = screen.query_one(ItemsTable)
        assert table.row_count == 8
        await pilot.press("slash", *"reference 2")
        assert await wait_until(pilot, lambda: table.row_count == 1)
        assert table.ids_in_order() == ["reference-002"]
        assert "filter: reference 2 (1 of 8 shown" in status_text(screen)
        await pilot.press("enter")  # keeps the filter, back to the table
        await settle(pilot)
        assert table.has_focus and table.row_count == 1
        # records arriving while filtered: only matches get rows, every record is kept
        table.upsert([{"item_id": "reference-102", "set": "reference", "prompt": "new 2", "status": "ok"},
                      {"item_id": "erased-100", "set": "erased", "prompt": "other", "status": "ok"}])
        assert table.ids_in_order() == ["reference-002", "reference-102"] and len(table.records) == 10
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: table.row_count == 10)
        assert "filter" not in status_text(screen)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, RunScreen)


async def test_filter_matches_errors_and_keeps_the_sort(config, concept_run):
    app = make_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_run(pilot, concept_run)
        table = screen.query_one(ItemsTable)
        await pilot.press("s")  # sort by PSNR
        await pilot.press("slash", *"photo")
        assert await wait_until(pilot, lambda: table.filter_words == "photo")
        psnrs = [table.records[i]["psnr"] for i in table.ids_in_order() if table.records[i]["psnr"] is not None]
        assert psnrs == sorted(psnrs) and len(table.ids_in_order()) == 8
        await pilot.press(*" identify")  # the failed item's error text
        assert await wait_until(pilot, lambda: table.ids_in_order() == ["erased-002"])


# ------------------------------------------------------------------------------------ scale
def test_scanner_reads_only_changed_runs(runs_dir, concept_run):
    other = runs_dir / "other"
    other.mkdir()
    (other / "spec.json").write_text(json.dumps({"analysis": "concept", "method": "renoise"}))
    scanner = jobs.RunScanner()
    first = {r.name: r for r in scanner.scan(runs_dir)}
    assert scanner.reads == 2 and set(first) == {"esd-parachute", "other"}
    again = {r.name: r for r in scanner.scan(runs_dir)}
    assert scanner.reads == 2 and again["other"] is first["other"]  # nothing changed: nothing read
    with open(other / "results.jsonl", "a") as f:  # an append (same folder mtime)
        f.write(json.dumps({"item_id": "x", "set": "erased", "status": "ok"}) + "\n")
    third = {r.name: r for r in scanner.scan(runs_dir)}
    assert scanner.reads == 3 and third["other"].done == 1
    assert third["esd-parachute"] is first["esd-parachute"]
    # a run holding its lock (running) is read on every scan
    (concept_run / "run.pid").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename,
                                                     "proc_start": None}))
    for _ in range(2):
        scanner.scan(runs_dir)
    assert scanner.reads == 5
    import shutil

    shutil.rmtree(other)
    assert [r.name for r in scanner.scan(runs_dir)] == ["esd-parachute"] and len(scanner.cache) == 1


async def test_sync_table_updates_changed_cells_in_place(config):
    from textual.app import App

    class One(App):
        def compose(self):
            yield DataTable()

    app = One()
    async with app.run_test() as pilot:
        table = app.query_one(DataTable)
        cols = [("a", "a"), ("b", "b")]
        sync_table(table, [("r1", ("x", "1")), ("r2", ("y", "2"))], cols)
        table.move_cursor(row=1)
        column_objects = list(table.ordered_columns)
        sync_table(table, [("r1", ("x", "1")), ("r2", ("y", "3"))], cols)
        assert table.get_row("r2") == ["y", "3"]
        assert list(table.ordered_columns) == column_objects and table.cursor_row == 1  # not rebuilt
        sync_table(table, [("r1", ("x", "a much longer cell than the column")), ("r2", ("y", "3"))], cols)
        assert table.get_row("r1")[1] == "a much longer cell than the column"
        assert table.ordered_columns[1].width == len("a much longer cell than the column")  # rebuilt wider
        sync_table(table, [("r2", ("y", "3"))], cols)
        assert [r.key.value for r in table.ordered_rows] == ["r2"]
        await pilot.pause()


# ------------------------------------------------------------------------------------ compare
async def test_compare_overlays_the_runs_distributions_with_the_law(config, runs_dir, concept_run):
    from memtui.engine.metrics import nll_law
    from memtui.screens.compare import CompareScreen
    from memtui.widgets.histogram import Histogram

    from tests.console.console_helpers import concept_records, concept_summary, make_run

    recs = concept_records(3, 2, psnr0=15.0)
    make_run(runs_dir, "uce-church", {"analysis": "concept", "method": "ddim", "ablated": "/ck/uce.safetensors",
                                      "erased": "/data/church"}, recs, concept_summary(recs, 2.5))
    app = make_app(config)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        await pilot.press("c")  # nothing marked: every finished concept run
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        nll = screen.query_one("#compare-nll-hist", Histogram)
        by_label = {k.split(": ")[0]: k for k in nll.series}
        assert len(nll.series) == 4  # 2 runs × (erased, reference)
        ok = [r for r in recs if r["set"] == "erased"]
        uce_erased = next(k for k in nll.series if "uce" in k and k.endswith(": erased"))
        assert sorted(nll.series[uce_erased]) == sorted(r["nll"] for r in ok)
        esd_erased = next(k for k in nll.series if "esd" in k and k.endswith(": erased"))
        assert len(nll.series[esd_erased]) == 3  # 4 items, one failed
        mean, std = nll_law(256)
        assert nll.law is not None and abs(nll.law[0] - mean) < 1e-6 and abs(nll.law[1] - std) < 1e-6
        assert nll.law[2] == "N(0,I) law, d=256" and by_label
        psnr = screen.query_one("#compare-psnr-hist", Histogram)
        assert sorted(psnr.series[uce_erased]) == sorted(r["psnr"] for r in ok) and psnr.law is None
        await pilot.press("2")
        await settle(pilot)
        assert screen.query_one("#compare-plots").active == "compare-psnr"
        assert not screen.query_one("#compare-note").display
