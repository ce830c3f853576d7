"""Configuration errors exit 2 with the reason, before the run directory is written (issue 12, item 9)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from memtui.cli import main

from tests.helpers import write_coco, write_official


@pytest.fixture()
def small(tmp_path: Path) -> tuple[Path, Path]:
    return write_official(tmp_path / "erased", 1), write_coco(tmp_path / "coco", [7])


def args(pipe: Path, data: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    return ["--batch", "--base", str(pipe), "--erased", str(data[0]), "--reference", str(data[1]),
            "--method", "ddim", "--steps", "3", "--device", "cpu", "--out", str(out), *extra]


def refused(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """Run ``argv``: exit 2, every word in stderr, no traceback, and nothing written in ``out``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    for w in words:
        assert w in err, err
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
    return err


@pytest.fixture()
def unet_file(tiny_pipe, tmp_path: Path) -> Path:
    """The tiny UNet's weights as a full-UNet safetensors checkpoint."""
    from safetensors.torch import save_file

    path = tmp_path / "unet.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in tiny_pipe.unet.state_dict().items()}, str(path))
    return path


def test_cuda_on_a_cpu_only_host(tiny_pipe_dir, small, tmp_path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a host without CUDA")
    out = tmp_path / "run"
    refused(args(tiny_pipe_dir, small, out, "--device", "cuda"), out, capsys, "cuda")


def test_unknown_device_name(tiny_pipe_dir, small, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    refused(args(tiny_pipe_dir, small, out, "--device", "gpu0"), out, capsys, "device")


@pytest.mark.parametrize("flags, word", [(("--steps", "1"), "steps"), (("--seed", "-5"), "seed"),
                                         (("--seed", "1e23"), "seed"),
                                         (("--seed", str(2 ** 63)), "seed")])
def test_bad_steps_and_seed(tiny_pipe_dir, small, tmp_path, capsys, flags, word) -> None:
    out = tmp_path / "run"
    refused(args(tiny_pipe_dir, small, out, *flags), out, capsys, word)


def spec_file(tmp_path: Path, pipe: Path, data: tuple[Path, Path], extra: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(f'base = "{pipe}"\nerased = "{data[0]}"\nreference = "{data[1]}"\nmethod = "ddim"\n'
                    f'steps = 3\ndevice = "cpu"\n{extra}\n')
    return path


@pytest.mark.parametrize("extra, word", [("inversion = 7", "inversion"),
                                         ("[inversion]\nbogus = 1", "bogus"),
                                         ("[inversion.ddim]\nbogus = 1", "bogus"),
                                         ("seed = 100000000000000000000000", "seed"),
                                         ("options = 3", "options")])
def test_bad_spec_file(tiny_pipe_dir, small, tmp_path, capsys, extra, word) -> None:
    out = tmp_path / "run"
    spec = spec_file(tmp_path, tiny_pipe_dir, small, extra)
    refused(["--batch", "--spec", str(spec), "--out", str(out)], out, capsys, word)


def test_truncated_safetensors_checkpoint(tiny_pipe_dir, small, unet_file, tmp_path, capsys) -> None:
    data = unet_file.read_bytes()
    unet_file.write_bytes(data[: len(data) // 2])
    out = tmp_path / "run"
    refused(args(tiny_pipe_dir, small, out, "--ablated", str(unet_file)), out, capsys, str(unet_file), "truncated")


def test_empty_pickle_checkpoint(tiny_pipe_dir, small, tmp_path, capsys) -> None:
    empty = tmp_path / "esd.pt"
    empty.write_bytes(b"")
    out = tmp_path / "run"
    refused(args(tiny_pipe_dir, small, out, "--ablated", str(empty)), out, capsys, str(empty), "empty")


def test_garbage_pickle_checkpoint(tiny_pipe_dir, small, tmp_path, capsys) -> None:
    bad = tmp_path / "esd.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    out = tmp_path / "run"
    assert main(args(tiny_pipe_dir, small, out, "--ablated", str(bad))) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(bad) in err, err


@pytest.mark.parametrize("damage", ["tokenizer", "unet"])
def test_damaged_base_model(tiny_pipe_dir, small, tmp_path, capsys, damage) -> None:
    base = tmp_path / "base"
    shutil.copytree(tiny_pipe_dir, base)
    if damage == "tokenizer":
        for f in (base / "tokenizer").iterdir():
            f.write_bytes(b"")
    else:
        w = base / "unet" / "diffusion_pytorch_model.safetensors"
        w.write_bytes(w.read_bytes()[:1000])
    out = tmp_path / "run"
    refused(args(base, small, out), out, capsys, str(base / damage))


def test_damaged_tokenizer_is_a_loading_error(tiny_pipe_dir, tmp_path) -> None:
    """Past the up-front check (a file that is not empty but broken), loading still says what failed."""
    from memtui.engine.model.loading import LoadingError, load_base

    base = tmp_path / "base"
    shutil.copytree(tiny_pipe_dir, base)
    (base / "tokenizer" / "tokenizer.json").write_text("{not json")
    with pytest.raises(LoadingError, match="tokenizer"):
        load_base(base)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_checkpoint_with_non_finite_tensors_is_refused(tiny_pipe_dir, small, tiny_pipe, tmp_path, capsys,
                                                       value) -> None:
    import torch
    from safetensors.torch import save_file

    sd = {k: v.detach().clone().contiguous() for k, v in tiny_pipe.unet.state_dict().items()}
    key = next(k for k in sd if k.endswith("attn2.to_k.weight"))
    sd[key][0, 0] = float(value)
    path = tmp_path / "nan.safetensors"
    save_file(sd, str(path))
    out = tmp_path / "run"
    assert main(args(tiny_pipe_dir, small, out, "--ablated", str(path))) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and key in err and ("NaN" in err or "Inf" in err), err
    assert not (out / "results.jsonl").exists() or "\"ok\"" not in (out / "results.jsonl").read_text()
    from memtui.engine.model.loading import LoadingError, load_ablated
    from memtui.engine.testkit import tiny_pipeline

    pipe = tiny_pipeline(seed=0)
    before = pipe.unet.state_dict()[key].clone()
    with pytest.raises(LoadingError, match="non-finite"):
        load_ablated(pipe, path)
    assert torch.equal(pipe.unet.state_dict()[key], before)  # nothing written


def test_a_valid_checkpoint_still_runs(tiny_pipe_dir, small, unet_file, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(args(tiny_pipe_dir, small, out, "--ablated", str(unet_file), "--steps", "2")) == 0


def test_batch_size_must_be_a_number_or_auto(tiny_pipe_dir, small, tmp_path, capsys):
    assert main(args(tiny_pipe_dir, small, tmp_path / "r", "--batch-size", "big")) == 2
    assert "must be a whole number or 'auto', got 'big'" in capsys.readouterr().err


def test_batch_size_auto_and_compile_flags_reach_the_spec(tiny_pipe_dir, small, tmp_path, monkeypatch):
    """``--batch-size auto --compile`` are stored in spec.json; on the CPU auto means 8, and the UNet
    is handed to torch.compile (stubbed here: compiling needs a C toolchain and minutes)."""
    import json

    from memtui.engine.model import speed

    wrapped: list[object] = []
    monkeypatch.setattr(speed, "compile_unet", lambda pipe, mode=None: wrapped.append(pipe) or True)
    out = tmp_path / "r"
    assert main(args(tiny_pipe_dir, small, out, "--batch-size", "auto", "--compile")) == 0
    spec = json.loads((out / "spec.json").read_text())
    assert spec["batch_size"] == "auto" and spec["compile"] is True
    assert json.loads((out / "summary.json").read_text())["batch_size"] == 8
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    stages = {e.get("stage"): e for e in events if e["type"] == "progress"}
    assert stages["batch_size"]["probe"] == {"probed": False, "reason": "no memory probe on cpu"}
    assert stages["compile"]["compiled"] is True and len(wrapped) == 1
