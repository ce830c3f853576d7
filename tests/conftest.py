"""Shared fixtures: tiny random-weight models (real diffusers/transformers classes), an isolated
user environment (config, data and HF cache dirs point into a temp dir; nothing leaks in or out),
and the datasets, classifiers and runs that tests in several folders use. Plain helpers (dataset
writers, fake detector weights, constants) live in ``tests/helpers.py``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import PROMPTS_CSV, classifier_folder, generate_spec, make_captions_set, write_coco, write_official


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


@pytest.fixture(scope="module")
def _one_thread():
    """Torch single-threaded for a module: the tiny models are fastest so on a shared, oversubscribed
    CPU, and one thread keeps float32 kernel rounding the same from run to run. The engine-level
    test modules (inversion, model loading, images, metrics) opt in with
    ``pytestmark = pytest.mark.usefixtures("_one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------ datasets
@pytest.fixture()
def concept_data(tmp_path: Path) -> tuple[Path, Path]:
    """(erased, reference): 3 official-layout images and 3 COCO images in L / RGBA / P modes."""
    erased = write_official(tmp_path / "erased", 3)
    reference = write_coco(tmp_path / "coco", [632, 139, 285], modes=["L", "RGBA", "P"])
    return erased, reference


@pytest.fixture(scope="session")
def mem_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """erased (2 images) and reference (6 images, the 5th (index 4) corrupt) caption datasets."""
    root = tmp_path_factory.mktemp("memdata")
    return {"erased": make_captions_set(root / "erased", 2, 0),
            "reference": make_captions_set(root / "reference", 6, 1, corrupt=(4,))}


@pytest.fixture(scope="session")
def mem_spec_dict(tiny_pipe_dir: Path, mem_data: dict[str, Path]) -> dict:
    """2 targets x 3 supports (target 1's second support is corrupt), 10 decoder steps, DDIM 4 steps."""
    return {"analysis": "memories", "base": str(tiny_pipe_dir), "erased": str(mem_data["erased"]),
            "reference": str(mem_data["reference"]), "method": "ddim", "steps": 4, "batch_size": 8,
            "device": "cpu", "options": {"num_targets": 2, "num_supports": 3, "vae_steps": 10,
                                         "sib_path": "reencode"}}


# ------------------------------------------------------------------ classifiers
@pytest.fixture(scope="session")
def imagenet_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny 1000-class ResNet folders: 'random' (random head) and 'church' (zero weights, bias
    5 at class 497 and 0 elsewhere, so softmax at 497 = e^5 / (e^5 + 999) for every image)."""
    root = tmp_path_factory.mktemp("imagenet")
    labels = {i: f"class_{i}" for i in range(1000)}
    bias = np.zeros(1000, np.float32)
    bias[497] = 5.0
    return {"random": classifier_folder(root / "random", labels, None, seed=1),
            "church": classifier_folder(root / "church", labels, bias)}


# ------------------------------------------------------------------ generation runs
@pytest.fixture(scope="session")
def prompts_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("prompts") / "church.csv"
    p.write_text(PROMPTS_CSV)
    return p


@pytest.fixture(scope="session")
def generated_set(tiny_pipe_dir: Path, prompts_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generate run of PROMPTS_CSV (5 rows, 4 LMS steps) on the tiny pipeline, uninterrupted."""
    from memtui.engine.compute.run import run_spec as run

    out = tmp_path_factory.mktemp("gen") / "church"
    run(generate_spec(tiny_pipe_dir, prompts_csv), out)
    return out
