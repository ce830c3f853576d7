"""Fixtures for the run tests: small synthetic datasets in each supported layout."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PROMPTS = ["a photo of a church", "a red circle", "a blue square", "a green triangle", "a dog on the star"]


def smooth_rgb(seed: int, size: int = 40) -> np.ndarray:
    """A smooth random uint8 image [size, size, 3] (blurred noise, so a VAE can roughly follow it)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def write_official(root: Path, n: int = 3, start_seed: int = 0) -> Path:
    """``imgs/<case>_0.png`` + prompts.csv for cases 0..n-1 (RGB PNGs)."""
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    with open(root / "prompts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case_number", "prompt", "evaluation_seed", "evaluation_guidance"])
        for case in range(n):
            w.writerow([case, PROMPTS[case % len(PROMPTS)], 1000 + case, 7.5])
            Image.fromarray(smooth_rgb(start_seed + case)).save(root / "imgs" / f"{case}_0.png")
    return root


def write_coco(root: Path, ids: list[int], modes: list[str] | None = None, order: list[int] | None = None) -> Path:
    """A COCO-2017 layout: ``val2017/<id:012d>.jpg|png`` written in ``order`` (default: ``ids``)
    and captions_val2017.json with two captions per image (the first is the expected prompt).
    ``modes`` picks the Pillow mode per image (RGB, L, RGBA, P, I;16)."""
    (root / "val2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    modes = modes or ["RGB"] * len(ids)
    images, anns = [], []
    for k, (iid, mode) in enumerate(zip(ids, modes)):
        images.append({"id": iid, "file_name": f"{iid:012d}.png"})
    for k, iid in enumerate(order or ids):
        mode = modes[ids.index(iid)]
        rgb = Image.fromarray(smooth_rgb(100 + iid))
        if mode == "I;16":
            g = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
            img = Image.fromarray(g.astype(np.uint16))  # mode I;16
        elif mode == "P":
            img = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        elif mode == "RGBA":
            img = rgb.convert("RGBA")
            a = np.asarray(img).copy()
            a[..., 3] = 200
            img = Image.fromarray(a, "RGBA")
        else:
            img = rgb.convert(mode)
        img.save(root / "val2017" / f"{iid:012d}.png")
    # annotations listed in reverse id order, so "first caption" != "smallest annotation id"
    for k, iid in enumerate(reversed(ids)):
        anns.append({"id": 10 * k + 1, "image_id": iid, "caption": f"a photo of the {PROMPTS[iid % 5].split()[-1]}"})
        anns.append({"id": 10 * k, "image_id": iid, "caption": "second caption"})
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return root


@pytest.fixture()
def concept_data(tmp_path: Path) -> tuple[Path, Path]:
    """(erased, reference): 3 official-layout images and 3 COCO images in L / RGBA / P modes."""
    erased = write_official(tmp_path / "erased", 3)
    reference = write_coco(tmp_path / "coco", [632, 139, 285], modes=["L", "RGBA", "P"])
    return erased, reference
