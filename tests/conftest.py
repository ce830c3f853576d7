"""Shared fixtures: tiny random-weight models (real diffusers/transformers classes) and an isolated
user environment (config, data and HF cache dirs point into a temp dir; nothing leaks in or out)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("home")
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                     ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache"),
                     ("HF_HOME", "hf")):
        os.environ[var] = str(home / sub)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_pipe():
    """A tiny SD-layout pipeline (fp32, CPU, eval). Shared: tests must not modify its weights."""
    from memtui.engine.testkit import tiny_pipeline

    return tiny_pipeline(seed=0)


@pytest.fixture(scope="session")
def tiny_pipe_dir(tiny_pipe, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline saved as a diffusers pipeline folder (read-only by convention)."""
    from memtui.engine.testkit import save_pipeline

    return save_pipeline(tiny_pipe, tmp_path_factory.mktemp("tiny") / "pipeline")
