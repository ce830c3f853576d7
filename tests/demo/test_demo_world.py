"""The procedural shape world: determinism and captions that match what is drawn (checked by
geometry of the drawn mask, independently of the generator's drawing code)."""
from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull

from memtui.engine.demo.world import BACKGROUNDS, COLOURS, SHAPES, generate


def test_same_seed_same_pixels_and_captions() -> None:
    a, la, ca = generate(40, seed=5)
    b, lb, cb = generate(40, seed=5)
    assert a.dtype == np.uint8 and a.shape == (40, 32, 32, 3)
    assert np.array_equal(a, b) and la == lb and ca == cb


def test_different_seeds_differ() -> None:
    a, _, _ = generate(20, seed=1)
    b, _, _ = generate(20, seed=2)
    assert not np.array_equal(a, b)
    assert sum(np.array_equal(x, y) for x, y in zip(a, b)) < 3


def _geometry(img: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Foreground mean colour, area / (pi R_max^2) and solidity of the shape's mask."""
    bg = img[0, 0].astype(float)
    mask = np.abs(img.astype(float) - bg).sum(-1) > 150
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs, ys], 1).astype(float)
    c = pts.mean(0)
    r_max = np.sqrt(((pts - c) ** 2).sum(1)).max() + 0.5
    roundness = len(pts) / (np.pi * r_max**2)
    solidity = len(pts) / ConvexHull(pts).volume
    return img[mask].mean(0), roundness, solidity


def test_captions_match_drawn_shapes_and_colours() -> None:
    imgs, labels, caps = generate(48, seed=3, size=96, plain_frac=0.25)
    plain = 0
    for img, label, cap in zip(imgs, labels, caps):
        words = cap.split()
        assert words[0] == "a" and words[-1] == label and label in SHAPES
        assert tuple(img[0, 0]) in BACKGROUNDS
        colour, roundness, solidity = _geometry(img)
        if len(words) == 3:
            assert np.abs(colour - np.array(COLOURS[words[1]])).max() < 25, cap
        else:
            plain += 1
        if label == "star":
            assert solidity < 0.8, (cap, solidity)
        else:
            assert solidity > 0.9, (cap, solidity)
            if label == "circle":
                assert roundness > 0.85, (cap, roundness)
            elif label == "square":
                assert 0.52 < roundness < 0.78, (cap, roundness)
            else:
                assert 0.3 < roundness < 0.52, (cap, roundness)
    assert 0 < plain < 48


def test_shape_restriction_cycles() -> None:
    _, labels, _ = generate(6, seed=0, shapes=("square", "star"))
    assert labels == ["square", "star"] * 3
