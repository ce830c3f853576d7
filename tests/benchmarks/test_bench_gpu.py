"""``benchmarks/bench_gpu.py --tiny``: the GPU benchmark's code, run on the CPU in seconds. Checked:
both sides do the same work (UNet item-passes counted, seeds and PSNR equal), the FLOP counter's
figure for a convolution equals the hand count, FLOPs grow linearly with the batch, and the
docs block is replaced, not appended, on a second write. (No speed is asserted: speed targets live
in the benchmark, not in tests.)"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("_one_thread")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def result(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "r.json"
    r = bench.main(["--tiny", "--no-write", "--json", str(out)])
    assert json.loads(out.read_text())["speedup"] == pytest.approx(r["speedup"])
    return r


def test_both_sides_do_the_same_work(result) -> None:
    a, b = result["official_style"], result["memtui"]
    assert result["model"] == "tiny" and result["images"] == 4 and result["batch"] == 4
    assert a["unet_item_passes_per_image"] == b["unet_item_passes_per_image"] > result["steps"]
    assert result["max_abs_diff_z_T"] < 1e-3
    assert a["psnr_mean"] == pytest.approx(b["psnr_mean"], abs=1e-2)
    assert a["images_per_hour"] > 0 and b["images_per_hour"] > 0 and result["speedup"] > 0
    assert result["settings"]["channels_last"] is False  # CPU fp32: left as it is
    assert "AttnProcessor2_0" in result["settings"]["attention"]  # PyTorch SDPA
    d = result["decoder_inversion"]
    assert d["items"] == 11 and d["sequential_item_steps_per_s"] > 0 and d["batched_item_steps_per_s"] > 0


def test_flop_count_matches_a_hand_count_and_scales_with_the_batch(bench, tiny_pipe) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    conv = tiny_pipe.unet.conv_in
    c, h, w = tiny_pipe.latent_shape()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        conv(torch.randn(3, c, h, w))
    k = conv.kernel_size[0] * conv.kernel_size[1]
    assert fc.get_total_flops() == 2 * 3 * conv.out_channels * conv.in_channels * k * h * w
    one, two = bench.unet_flops(tiny_pipe, 1), bench.unet_flops(tiny_pipe, 2)
    assert one > 0 and two == pytest.approx(2 * one, rel=1e-6)


def test_the_docs_block_is_replaced(bench, result, tmp_path, monkeypatch) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nother text\n")
    monkeypatch.setattr(bench, "DOC", doc)
    bench.write_doc(result, "python benchmarks/bench_gpu.py --tiny")
    bench.write_doc(result, "python benchmarks/bench_gpu.py --tiny")
    text = doc.read_text()
    assert text.count(bench.START) == 1 and text.count(bench.END) == 1 and "other text" in text
    assert "official-style loop" in text and f"{result['speedup']:.2f}×" in text
