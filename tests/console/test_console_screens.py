"""Each screen's main flow driven by the keyboard: browse → inspect, new-run validation in words,
compare numbers equal the summaries', memories view, help, settings and theme persistence."""
from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path

import pytest
from tests.console.console_helpers import (concept_records, concept_summary, make_app, make_run, plain, settle,
                             wait_until, write_png)

from memtui.config import load_config
from memtui.screens.compare import CompareScreen
from memtui.screens.help import HelpScreen
from memtui.screens.inspect import InspectScreen
from memtui.screens.memories import MemoriesScreen
from memtui.screens.new_run import NewRunScreen
from memtui.screens.settings import SettingsScreen


def make_dataset(root: Path, n: int) -> Path:
    """A plain image folder with captions.csv."""
    root.mkdir(parents=True)
    rows = ["file,caption"]
    for i in range(n):
        write_png(root / f"img{i}.png", 100 + i)
        rows.append(f"img{i}.png,a picture {i}")
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root


async def test_browse_runs_datasets_and_inspect(tmp_path, config, concept_run):
    make_dataset(tmp_path / "data" / "birds", 3)
    (tmp_path / "data" / "junk").mkdir()
    config.dataset_roots = [str(tmp_path / "data")]
    app = make_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        runs = app.screen.query_one("#runs-table")
        row = runs.get_row_at(0)
        assert row[1] == "esd-parachute" and str(row[2]) == "finished" and row[5] == "8/8"
        summary = json.loads((concept_run / "summary.json").read_text())
        assert f"PSNR {summary['sets']['erased']['psnr']['mean']:.2f} dB" in row[6]
        assert f"RD {summary['relative_distance']:.2f}" in row[6]
        await pilot.press("i")
        await settle(pilot)
        assert isinstance(app.screen, InspectScreen)
        assert "status: finished" in plain(app.screen.query_one("#inspect-body"))
        await pilot.press("escape")
        await pilot.press("3")
        await settle(pilot)
        ds = app.screen.query_one("#datasets-table")
        rows = {ds.get_row_at(i)[0]: ds.get_row_at(i) for i in range(ds.row_count)}
        assert rows["birds"][1] == "captions" and rows["birds"][2] == "3 images"
        assert rows["junk"][1] == "unknown"
        ds.move_cursor(row=list(rows).index("birds"))
        await pilot.press("i")
        await settle(pilot)
        body = plain(app.screen.query_one("#inspect-body"))
        assert "captions" in body and "img0.png" in body and "img2.png" in body


async def test_browse_checkpoints_show_detected_kind(tmp_path, config, tiny_pipe_dir):
    config.checkpoint_roots = [str(tiny_pipe_dir)]
    app = make_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("2")
        table = app.screen.query_one("#checkpoints-table")
        assert await wait_until(pilot, lambda: table.row_count == 1 and table.get_row_at(0)[1] != "?",
                                limit=200)
        name, kind, size = table.get_row_at(0)[:3]
        assert name == tiny_pipe_dir.name and kind == "pipeline · sd1" and size.endswith("iB")


async def test_new_run_validation_says_what_is_wrong(tmp_path, config, runs_dir):
    make_run(runs_dir, "taken", {"analysis": "concept"}, [])
    good = make_dataset(tmp_path / "ok-set", 2)
    bad = tmp_path / "no-layout"
    bad.mkdir()
    app = make_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, NewRunScreen)
        for fid, value in (("name", "taken"), ("base", str(tmp_path / "nowhere")),
                           ("erased", str(bad)), ("reference", str(good)), ("steps", "ten")):
            screen.query_one(f"#f-{fid}").value = value
        await pilot.press("f2")
        await settle(pilot)
        text = " ".join(plain(screen.query_one("#problems")).split())
        assert "A run named 'taken' already exists" in text
        assert "neither an existing folder nor a model in the local Hugging Face cache" in text
        assert "The erased set is not usable" in text and "not a dataset folder" in text
        assert "reference set" not in text
        assert "number of steps must be a whole number" in text
        assert not (runs_dir / "taken" / "console.pid").exists()


async def test_compare_table_equals_summaries(config, runs_dir):
    specs = {"esd-parachute": ("esd", "parachute", 1.25, 20.0), "uce-parachute": ("uce", "parachute", 2.5, 15.0),
             "esd-church": ("esd", "church", 0.75, 18.0)}
    for name, (method, concept, rd, p0) in specs.items():
        recs = concept_records(3, 3, psnr0=p0)
        make_run(runs_dir, name, {"analysis": "concept", "method": "ddim", "ablated": f"/ck/{method}.safetensors",
                                  "erased": f"/data/{concept}"}, recs, concept_summary(recs, rd), images=False)
    app = make_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, CompareScreen)
        table = app.screen.query_one("#compare-table")
        header = [str(c.label) for c in table.columns.values()]
        assert header == ["method", "church", "parachute"]
        for name, (method, concept, _, _) in specs.items():
            s = json.loads((runs_dir / name / "summary.json").read_text())
            cell = table.get_cell(f"ddim·{method}", concept)
            assert cell == f"{s['sets']['erased']['psnr']['mean']:.2f} dB · {s['relative_distance']:.2f}"
        assert table.get_cell("ddim·uce", "church") == ""


async def test_memories_view(config, runs_dir):
    recs = [{"item_id": "target-000", "set": "target", "prompt": "a church", "status": "ok", "psnr": 22.0, "nll": 360.0}]
    for j in range(4):
        recs.append({"item_id": f"target-000-mem-{j}", "set": "memory", "target_id": "target-000",
                     "prompt": "a church", "status": "ok", "psnr": 20.0 + j, "nll": 350.0 + 5 * j,
                     "distance_to_target": 15.0 + j})
    recs.append({"item_id": "control-000", "set": "control", "status": "ok", "nll": 365.0, "psnr": 25.0})
    make_run(runs_dir, "memories-1", {"analysis": "memories", "method": "ddim"}, recs, {"d": 256})
    app = make_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("m")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MemoriesScreen)
        t = screen.query_one("#targets")
        assert t.row_count == 1 and t.get_row_at(0)[:3] == ["target-000", "4", "21.50"]
        grid = plain(screen.query_one("#memory-grid"))
        assert all(f"mem-{j}" in grid and f"{20 + j:.2f}dB" in grid for j in range(4))
        assert screen.query_one("#dist-hist").series["memories"] == [15.0, 16.0, 17.0, 18.0]
        nll = screen.query_one("#mem-nll-hist")
        assert nll.series == {"memories": [350.0, 355.0, 360.0, 365.0], "control": [365.0]}
        assert nll.law is not None and abs(nll.law[0] - 128 * (1 + math.log(2 * math.pi))) < 1e-9


async def test_help_opens_with_screen_keys(config, concept_run):
    app = make_app(config)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert ("n", "New run") in app.screen.rows and ("c", "Compare") in app.screen.rows
        text = plain(app.screen.query_one("#help-body"))
        assert "New run" in text and "quit (runs keep going)" in text
        await pilot.press("escape")
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and ("x", "Cancel run") in app.screen.rows


async def test_theme_and_settings_persist(tmp_path, config):
    app = make_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app.theme == "memtui"
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert app.theme == "memtui-light"
        assert tomllib.loads(config.path.read_text())["theme"] == "memtui-light"
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)
        app.screen.query_one("#dataset_roots").value = "/data/a, /data/b"
        await pilot.press("ctrl+r")
        await pilot.pause()
    saved = load_config(config.path)
    assert saved.dataset_roots == ["/data/a", "/data/b"] and saved.theme == "memtui-light"
    app2 = make_app(load_config(config.path))
    async with app2.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert app2.theme == "memtui-light"


async def test_palette_lists_screen_actions(config, concept_run):
    from memtui.app import ScreenActions

    app = make_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        provider = ScreenActions(app.screen)
        names = [c[0] for c in provider.commands()]
        assert "browse: New run" in names and "browse: Compare" in names
        cb = dict((c[0], c[2]) for c in provider.commands())["browse: New run"]
        await cb()
        await settle(pilot)
        assert isinstance(app.screen, NewRunScreen)


async def test_new_run_offers_the_demo_when_nothing_is_configured(config, demo_allowed):
    from memtui import launch

    if not launch.demo_available():
        pytest.skip("demo weights not installed")
    from memtui.engine.demo import base_dir, erased_path

    app = make_app(config)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        assert "built-in demo world" in plain(app.screen.query_one("#runs-hint"))
        await pilot.press("n")
        await settle(pilot)
        values = app.screen.values()
        assert values["base"] == str(base_dir()) and values["ablated"] == str(erased_path())
        assert (Path(values["erased"]) / "prompts.csv").exists()
        assert (Path(values["reference"]) / "captions.csv").exists()
        await pilot.press("f2")
        await settle(pilot)
        assert "ready to launch" in plain(app.screen.query_one("#problems"))
        assert str(Path(values["erased"])).startswith(os.environ["XDG_DATA_HOME"])
        # back on Browse, a refresh lists the shipped checkpoints and the drawn demo datasets
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot, rounds=4)
        ckpts = {e.name: e for e in app.screen.entries["checkpoints"]}
        assert ckpts["demo base"].kind == "pipeline" and ckpts["demo base"].source == "built-in"
        assert ckpts["demo erased circle"].kind == "unet_partial"
        sets = {e.name: e for e in app.screen.entries["datasets"]}
        assert (sets["demo erased"].kind, sets["demo erased"].size) == ("official", "32 images")
        assert (sets["demo reference"].kind, sets["demo reference"].size) == ("captions", "32 images")
