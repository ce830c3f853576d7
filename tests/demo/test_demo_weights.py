"""The shipped demo weights: size budget, loading through the SD loader (base folder + partial UNet
file of the erased twin), and sampling images of the right shape."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from memtui.engine.demo import DEMO_CONCEPT, demo_dir, erased_path, load_demo
from memtui.engine.diffusion.ddim import generate_images


@pytest.fixture(scope="module")
def pipes():
    return load_demo("base"), load_demo("erased")


def test_weights_within_budget() -> None:
    files = [p for p in demo_dir().rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
    assert (demo_dir() / "base" / "model_index.json").is_file() and erased_path().is_file()


def test_erased_twin_differs_exactly_in_the_file_tensors(pipes) -> None:
    base, erased = pipes
    partial = load_file(str(erased_path()))
    sb, se = base.unet.state_dict(), erased.unet.state_dict()
    assert partial and set(partial) < set(sb)
    for k in sb:
        if k in partial:
            assert torch.equal(se[k], partial[k])
        else:
            assert torch.equal(se[k], sb[k]), k
    assert any(not torch.equal(sb[k], partial[k]) for k in partial)
    assert all(".attn2." in k for k in partial)  # ESD-x


def test_generates_images(pipes) -> None:
    base, erased = pipes
    assert base.image_size == 32 and base.latent_shape() == (4, 8, 8)
    for pipe in pipes:
        x = generate_images(pipe, f"a {DEMO_CONCEPT}", 3, seed=0, steps=5)
        assert x.shape == (3, 3, 32, 32) and torch.isfinite(x).all()
        assert float(x.min()) >= -1 and float(x.max()) <= 1 and float(x.std()) > 0.05


def test_detector_reads_demo_model_output(pipes) -> None:
    """Samples of the base model for "a square" are mostly classified as squares, not circles."""
    from memtui.engine.detectors import load_detector

    base, _ = pipes
    x = generate_images(base, "a square", 16, seed=1, steps=20)
    arr = np.clip(np.rint((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5), 0, 255).astype(np.uint8)
    det = load_detector("demo")
    d = det.detect([Image.fromarray(a) for a in arr], "square")
    assert d.rate >= 0.5
