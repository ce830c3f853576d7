"""Tiny random-weight pipelines of every family, saved as pipeline folders."""
from __future__ import annotations

from pathlib import Path

import pytest

from memtui.engine.testkit import save_pipeline, tiny_pipeline

FAMILIES = ("sd1", "sd2", "sdxl", "flux")


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """family -> a saved tiny pipeline folder (sd2 is v-prediction)."""
    root = tmp_path_factory.mktemp("families")
    return {f: save_pipeline(tiny_pipeline(seed=3, family=f), root / f) for f in FAMILIES}
