"""Fixtures of the memories tests: deterministic random images, small caption datasets and a
tiny memories spec (few decoder and diffusion steps)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

WORDS = ("red circle", "blue square", "green triangle", "red star", "blue circle")


@pytest.fixture(scope="module")
def rand_images() -> torch.Tensor:
    """Three smooth-ish random RGB images ``[3, 3, 32, 32]`` in [-1, 1] (seeded)."""
    g = torch.Generator().manual_seed(1)
    low = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)


def make_captions_set(folder: Path, n: int, seed: int, corrupt: tuple[int, ...] = ()) -> Path:
    """``n`` smooth random 32x32 PNGs + captions.csv; indices in ``corrupt`` get a broken file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["file,caption"]
    for i in range(n):
        if i in corrupt:
            (folder / f"img{i}.png").write_bytes(b"not a png")
        else:
            low = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(low).resize((32, 32), Image.BILINEAR).save(folder / f"img{i}.png")
        lines.append(f"img{i}.png,a photo of a {WORDS[i % len(WORDS)]}")
    (folder / "captions.csv").write_text("\n".join(lines) + "\n")
    return folder


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
