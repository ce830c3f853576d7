"""Model identities: a resumed run refuses model files that changed under the same paths (it would
mix records of two models), and accepts a byte-identical copy (modification times do not count)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from memtui.cli import main
from memtui.engine.runs.identity import BLOCK, BLOCKS, identity_changes, model_identity
from memtui.engine.runs.store import RunDir

from tests.helpers import write_official

pytestmark = pytest.mark.usefixtures("_one_thread")


def test_identity_of_files_and_folders(tmp_path: Path) -> None:
    big = tmp_path / "m" / "unet" / "w.safetensors"
    big.parent.mkdir(parents=True)
    data = bytearray(os.urandom(BLOCK * BLOCKS * 3))
    big.write_bytes(bytes(data))
    (tmp_path / "m" / "model_index.json").write_text("{}")  # not a weights file: not part of it
    a = model_identity(tmp_path / "m")
    assert a["files"] == 1 and a["bytes"] == len(data)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "m", copy)
    os.utime(copy / "unet" / "w.safetensors", (1, 1))
    assert model_identity(copy)["digest"] == a["digest"]  # same bytes, other mtime
    data[0] ^= 1  # the first block is always sampled
    big.write_bytes(bytes(data))
    b = model_identity(tmp_path / "m")
    assert b["digest"] != a["digest"] and identity_changes({"base": a}, {"base": b}) == {"base": (a, b)}
    assert identity_changes({"base": a}, {"ablated": b}) == {}  # nothing to compare
    small = tmp_path / "erased.safetensors"
    small.write_bytes(b"x" * 1000)
    s1 = model_identity(small)
    small.write_bytes(b"x" * 999 + b"y")  # small files are hashed whole
    assert model_identity(small)["digest"] != s1["digest"]
    assert model_identity("CompVis/stable-diffusion-v1-4") is None and model_identity(None) is None


def test_resume_refuses_other_weights_at_the_same_path(tiny_pipe_dir: Path, tmp_path: Path, capsys) -> None:
    from safetensors.torch import load_file, save_file

    pipe = tmp_path / "pipe"
    shutil.copytree(tiny_pipe_dir, pipe)
    write_official(tmp_path / "data", 2)
    out = tmp_path / "run"
    cmd = ["--batch", "--base", str(pipe), "--erased", str(tmp_path / "data"), "--reference", str(tmp_path / "data"),
           "--method", "ddim", "--steps", "2", "--max-items", "1", "--device", "cpu", "--out", str(out)]
    assert main(cmd) == 0
    started = next(e for e in RunDir(out).read_events() if e["type"] == "started")
    assert started["models"]["base"]["digest"] == model_identity(pipe)["digest"]
    assert main(cmd) == 0  # same weights: resumes (nothing left to do)
    n_events = len(RunDir(out).read_events())
    unet = pipe / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(unet))
    save_file({k: v + 0.01 for k, v in sd.items()}, str(unet))  # a "retrained" UNet, same path
    capsys.readouterr()
    before = (out / "results.jsonl").read_bytes()
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert "was started with other model weights at the same paths" in err and "  base: started with" in err
    assert (out / "results.jsonl").read_bytes() == before
    assert len(RunDir(out).read_events()) == n_events and RunDir(out).status() == "finished"  # untouched
    assert main(cmd + ["--restart"]) == 0
    started = next(e for e in RunDir(out).read_events() if e["type"] == "started")
    assert started["models"]["base"]["digest"] == model_identity(pipe)["digest"]
