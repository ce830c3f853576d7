"""The demo world: a deterministic procedural generator of small coloured shapes with captions.

Every image is drawn at ``4 * size`` pixels with Pillow and downsampled (box filter) to ``size``
(32 by default), so edges are anti-aliased. Images are uint8 arrays ``[H, W, 3]``; captions are
"a <colour> <shape>" or, for ``plain_frac`` of them, "a <shape>" (so "a <shape>" is in-distribution).
Everything is a function of the seed: same seed -> identical pixels and captions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230), "yellow": (235, 205, 40),
}
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((20, 20, 20), (235, 235, 235))
WORDS: tuple[str, ...] = ("a",) + SHAPES + tuple(COLOURS)
SUPERSAMPLE = 4


@dataclass
class Sample:
    """One drawn image ``[size, size, 3]`` uint8 with its shape, colour and caption."""

    image: np.ndarray
    shape: str
    colour: str
    background: int
    caption: str


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    if shape == "square":
        n, radii = 4, [r * 1.12] * 4  # area ~0.8x the circle of radius r
        rot = rot % (math.pi / 2)
        angles = [rot + math.pi / 4 + k * math.pi / 2 for k in range(4)]
    elif shape == "triangle":
        n, radii = 3, [r * 1.1] * 3
        angles = [rot - math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
    elif shape == "star":
        n = 10
        radii = [r * 1.1 if k % 2 == 0 else r * 0.45 for k in range(n)]
        angles = [rot - math.pi / 2 + k * math.pi / 5 for k in range(n)]
    else:
        raise ValueError(shape)
    return [(cx + rr * math.cos(a), cy + rr * math.sin(a)) for rr, a in zip(radii, angles)]


def draw(shape: str, colour: str, background: int, cx: float, cy: float, r: float, rot: float,
         size: int = 32) -> np.ndarray:
    """Draw one shape; ``cx, cy, r`` in output pixels, ``rot`` in radians. Returns uint8 ``[size, size, 3]``."""
    k = SUPERSAMPLE
    img = Image.new("RGB", (size * k, size * k), BACKGROUNDS[background])
    d = ImageDraw.Draw(img)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse([(cx - r) * k, (cy - r) * k, (cx + r) * k, (cy + r) * k], fill=fill)
    else:
        d.polygon([(x * k, y * k) for x, y in _polygon(shape, cx, cy, r, rot)], fill=fill)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def sample(rng: np.random.Generator, shape: str | None = None, size: int = 32,
           plain_frac: float = 0.15) -> Sample:
    """Draw one random sample (shape chosen uniformly unless given) from ``rng``."""
    s = SHAPES[int(rng.integers(len(SHAPES)))] if shape is None else shape
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    bg = int(rng.integers(len(BACKGROUNDS)))
    r = size * float(rng.uniform(0.24, 0.34))
    cx = size / 2 + size * float(rng.uniform(-0.08, 0.08))
    cy = size / 2 + size * float(rng.uniform(-0.08, 0.08))
    rot = float(rng.uniform(-0.3, 0.3))
    plain = bool(rng.random() < plain_frac)
    caption = f"a {s}" if plain else f"a {colour} {s}"
    return Sample(draw(s, colour, bg, cx, cy, r, rot, size), s, colour, bg, caption)


def generate(n: int, seed: int, shapes: tuple[str, ...] | str | None = None, size: int = 32,
             plain_frac: float = 0.15) -> tuple[np.ndarray, list[str], list[str]]:
    """``n`` samples from ``seed``: images uint8 ``[n, size, size, 3]``, shape labels, captions.
    ``shapes`` restricts the shapes drawn (cycled in order when given, uniform otherwise)."""
    rng = np.random.default_rng(seed)
    if isinstance(shapes, str):
        shapes = (shapes,)
    out = [sample(rng, None if shapes is None else shapes[i % len(shapes)], size, plain_frac)
           for i in range(n)]
    imgs = np.stack([o.image for o in out]) if out else np.zeros((0, size, size, 3), np.uint8)
    return imgs, [o.shape for o in out], [o.caption for o in out]
