"""The demo shape classifier behind the Detector interface: high accuracy on a seeded batch of
generator images (clean and VAE round-tripped), probabilities, yes/no flags and errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from memtui.engine.demo.world import SHAPES, generate
from memtui.engine.detectors import DetectorError, load_detector


@pytest.fixture(scope="module")
def det():
    return load_detector("demo")


@pytest.fixture(scope="module")
def batch():
    imgs, labels, _ = generate(200, seed=4242, plain_frac=0.0)
    return [Image.fromarray(a) for a in imgs], np.array(labels)


def test_concepts_and_probabilities(det, batch) -> None:
    images, _ = batch
    assert det.concepts == SHAPES and det.name == "demo"
    s = det.scores(images[:10])
    assert s.shape == (10, 4) and s.dtype == np.float32
    np.testing.assert_allclose(s.sum(1), 1.0, atol=1e-5)


def test_accuracy_on_generator_images(det, batch) -> None:
    images, labels = batch
    pred = np.array(SHAPES)[det.scores(images).argmax(1)]
    assert (pred == labels).mean() >= 0.95
    for shape in SHAPES:
        d = det.detect(images, shape)
        assert d.flags.dtype == bool and len(d.flags) == len(images)
        assert (d.flags == (labels == shape)).mean() >= 0.95, shape
    # resized inputs are accepted (the detector resizes to 32x32)
    big = [im.resize((64, 64), Image.Resampling.NEAREST) for im in images[:40]]
    assert (np.array(SHAPES)[det.scores(big).argmax(1)] == labels[:40]).mean() >= 0.9


def test_accuracy_on_vae_round_trips(det, batch) -> None:
    from memtui.engine.demo import load_demo

    images, labels = batch
    pipe = load_demo("base")
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images[:96]])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        rec = pipe.decode_latents(pipe.encode_images(x)).clamp(-1, 1)
    arr = np.rint((rec.permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8)
    pred = np.array(SHAPES)[det.scores([Image.fromarray(a) for a in arr]).argmax(1)]
    assert (pred == labels[:96]).mean() >= 0.9


def test_unknown_concept_and_missing_file(det, tmp_path) -> None:
    with pytest.raises(DetectorError):
        det.detect([], "church")
    with pytest.raises(DetectorError):
        load_detector("demo", tmp_path)
