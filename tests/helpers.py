"""Plain helpers shared by the test packages (no fixtures: those live in the conftest.py files).
Import them as ``from tests.helpers import ...`` (``tests/`` and its folders are packages).

- datasets in each supported layout: ``smooth_rgb``, ``write_official``, ``write_coco`` (official /
  COCO-2017) and ``make_captions_set`` (file,caption CSV);
- fake detector models: ``NUDENET_LABELS``, ``nudenet_weights``, ``classifier_folder``,
  ``STYLE_LABELS``, ``STYLE_BIAS``;
- generation runs: ``GEN_STEPS``, ``PROMPTS_CSV``, ``generate_spec``;
- sweep commands as child processes: ``sweep_command``, ``wait_for_a_record``, ``read_ok_records``.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

# ------------------------------------------------------------------ datasets
PROMPTS = ["a photo of a church", "a red circle", "a blue square", "a green triangle", "a dog on the star"]
WORDS = ("red circle", "blue square", "green triangle", "red star", "blue circle")


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


# ------------------------------------------------------------------ fake detector models
NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
    "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
    "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)


def nudenet_weights(size: int) -> tuple[np.ndarray, np.ndarray]:
    """W [3, (4+18)*3], B [(4+18)*3] of the fake NudeNet: output[0, r, n] = mean_rgb @ W[:, r*3+n] + B.

    anchor 0: box (16, 16, 10, 10), FEMALE_BREAST_EXPOSED score = mean red
    anchor 1: box (17, 16, 10, 10) (IoU 0.82 with anchor 0), BELLY_EXPOSED score = 0.9 * mean red
    anchor 2: box (3, 3, 4, 4), FACE_FEMALE score = mean blue
    """
    C, N = len(NUDENET_LABELS), 3
    W = np.zeros((3, 4 + C, N), np.float32)
    B = np.zeros((4 + C, N), np.float32)
    B[:4, 0] = (16, 16, 10, 10)
    B[:4, 1] = (17, 16, 10, 10)
    B[:4, 2] = (3, 3, 4, 4)
    W[0, 4 + NUDENET_LABELS.index("FEMALE_BREAST_EXPOSED"), 0] = 1.0
    W[0, 4 + NUDENET_LABELS.index("BELLY_EXPOSED"), 1] = 0.9
    W[2, 4 + NUDENET_LABELS.index("FACE_FEMALE"), 2] = 1.0
    return W.reshape(3, -1), B.reshape(-1)


def classifier_folder(path: Path, labels: dict[int, str], bias: np.ndarray | None, seed: int = 0) -> Path:
    """A tiny ResNet image classifier saved as a transformers folder (zero weights and ``bias`` as
    the head when ``bias`` is given, so every image gets the logits ``bias``)."""
    import torch
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    cfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                       layer_type="basic", num_labels=len(labels), id2label=labels,
                       label2id={v: k for k, v in labels.items()})
    model = ResNetForImageClassification(cfg).eval()
    if bias is not None:
        lin = model.classifier[-1]
        with torch.no_grad():
            lin.weight.zero_()
            lin.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    model.save_pretrained(path)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(path)
    return path


STYLE_LABELS = {0: "claude-monet", 1: "vincent-van-gogh", 2: "pablo-picasso", 3: "rembrandt"}
STYLE_BIAS = np.array([3.0, 2.0, 1.0, 0.0], np.float32)

# ------------------------------------------------------------------ generation runs
GEN_STEPS = 4
PROMPTS_CSV = (
    "case_number,prompt,evaluation_seed,evaluation_guidance\n"
    "0,red circle,1,7.5\n"
    "1,red circle,2,7.5\n"
    "2,red circle,1,7.5\n"
    "3,red circle,1,1.0\n"
    "4,a photo of church,5,\n"
)


def generate_spec(base: Path, prompts: Path, **options):
    from memtui.engine.runs.spec import RunSpec

    return RunSpec(analysis="generate", base=str(base), batch_size=2, device="cpu",
                   options={"prompts": str(prompts), "steps": GEN_STEPS, **options})


def write_captions_csv(root: Path, rows: list[tuple[str, str]]) -> Path:
    """``root/captions.csv`` with a ``file,caption`` header and ``rows`` (written as the csv module
    writes them: quoted where needed, newlines inside fields kept)."""
    path = root / "captions.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "caption"])
        w.writerows(rows)
    return path


@contextlib.contextmanager
def sweep_command(sweep: Path, out: Path, *extra: str, env: dict | None = None) -> Iterator[subprocess.Popen]:
    """``memtui --batch --sweep SWEEP --out OUT`` as a child process (stderr piped); killed and
    reaped on the way out if it still runs."""
    proc = subprocess.Popen([sys.executable, "-m", "memtui", "--batch", "--sweep", str(sweep), "--out", str(out),
                             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=os.environ.copy() if env is None else env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def wait_for_a_record(proc: subprocess.Popen, out: Path, cell: str = "*", timeout: float = 180) -> None:
    """Wait until a cell (``OUT/<cell>/results.jsonl``, any cell by default) has recorded an item;
    fails if ``proc`` ended first or the time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r.is_file() and r.read_bytes().count(b"\n") >= 1 for r in out.glob(f"{cell}/results.jsonl")):
            return
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()
    raise AssertionError(f"no cell of {out} recorded an item within {timeout} s")


def read_ok_records(run_dir: Path) -> list[dict]:
    """Every record of ``RUN_DIR/results.jsonl``, asserting each item is recorded once and ok."""
    lines = [json.loads(ln) for ln in (run_dir / "results.jsonl").read_text().splitlines()]
    ids = [r["item_id"] for r in lines]
    assert sorted(ids) == sorted(set(ids)) and all(r["status"] == "ok" for r in lines), ids
    return lines
