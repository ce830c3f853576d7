"""Console test fixtures: an isolated config pointing at a runs folder, and a finished concept run."""
from __future__ import annotations

from pathlib import Path

import pytest
from tests.console.console_helpers import concept_records, concept_summary, make_run

from memtui.config import Config


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    return d


@pytest.fixture
def config(tmp_path: Path, runs_dir: Path) -> Config:
    """An isolated config file (in tmp) pointing at ``runs_dir``; no checkpoint/dataset roots."""
    return Config(runs_dir=str(runs_dir), path=tmp_path / "config.toml")


@pytest.fixture
def concept_run(runs_dir: Path) -> Path:
    recs = concept_records(error_at=2)
    return make_run(runs_dir, "esd-parachute", {"analysis": "concept", "method": "ddim",
                                                "base": "/models/sd14", "ablated": "/ckpt/esd-parachute.safetensors",
                                                "erased": "/data/parachute", "reference": "/data/coco"},
                    recs, concept_summary(recs, 1.25))




@pytest.fixture(autouse=True)
def _no_demo_defaults(request, monkeypatch):
    """Screens in tests don't depend on whether the demo weights are installed (except in tests
    that ask for the ``demo_allowed`` fixture)."""
    if "demo_allowed" not in request.fixturenames:
        monkeypatch.setattr("memtui.demo_world.demo_available", lambda: False)


@pytest.fixture
def demo_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the console offer the installed demo world (see ``_no_demo_defaults``); the demo datasets
    it draws go to a temporary user data dir, not the real one."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
