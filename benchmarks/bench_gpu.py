"""memtui against an official-style loop on one accelerator: images per hour, UNet TFLOP/s, peak
memory, and the SIB's decoder-inversion steps per second (issue 16).

    python benchmarks/bench_gpu.py                 # on a GPU: SD 1.4 architecture, 512 px (<= 8 min)
    python benchmarks/bench_gpu.py --tiny          # the same code on the CPU in seconds (tested)
    python benchmarks/bench_gpu.py --model mid     # a mid-size random model (CPU figures)

Models are built from their configurations with random weights and the real classes (UNet2D-
ConditionModel, AutoencoderKL, a CLIPTextModel of ViT-L/14's size, a tokenizer built locally):
nothing is downloaded. ``sd14``: SD 1.4's UNet (320/640/1280/1280, cross-attention 768), VAE
(128/256/512/512) and text encoder (12 layers, 768 wide, 49408 tokens) at 512 x 512; ``mid``: a
quarter-width SD layout at 128 px; ``tiny``: the test kit's model at 32 px; ``demo``: the demo world's
shipped base model.

Both sides invert the same images with the same prompts, steps and method (ReNoise in the official
configuration by default), and reconstruct them:

(a) **official-style loop**: what the official code does per image — batch 1, fp32, the prompt
    encoded again for every image (no cache), a second pipeline resident (the official code holds
    an inversion pipeline and a generation pipeline), no channels_last, no compile. Its ReNoise kernel
    is memtui's, which equals the official code to float precision (``tests/inversion``).
(b) **memtui best**: one pipeline, batches of ``--batch`` images, weights in ``--precision``
    (bf16 on CUDA; schedules, NLL and metrics stay float32), prompt embeddings cached,
    ``channels_last`` on CUDA in half precision, ``torch.compile`` with ``--compile``.

Reported: images per hour of each and their ratio; UNet item-passes per image (counted); the FLOPs of
one UNet pass (``torch.utils.flop_counter``) and the TFLOP/s of (b)'s UNet at its batch size as a
fraction of the device's dense bf16 peak (a table of known devices, or ``--peak-tflops``); peak
accelerator memory (CUDA) or peak RSS (CPU) of each; the decoder inversion's item-steps per second,
11 items (a target and its 10 supports) one by one vs in one batch. Results go to stdout as a table,
to ``--json FILE``, and (not with ``--tiny``, or with ``--write``) into ``docs/benchmarks.md``
between ``<!-- bench_gpu:start -->`` and ``<!-- bench_gpu:end -->``.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench_gpu:start -->", "<!-- bench_gpu:end -->"
WORDS = ("a", "photo", "of", "red", "blue", "circle", "square", "church", "dog", "painting", "the", "on")
PROMPTS = ("a photo of a red circle", "a blue square", "a painting of the church", "a photo of a dog")

# dense bf16 tensor-core peak, TFLOP/s (vendor data sheets; SXM parts)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0,
                    "L40": 181.0, "A10": 125.0, "L4": 121.0, "RTX 4090": 165.0, "RTX 3090": 71.0,
                    "A6000": 155.0, "V100": 125.0}


# ----------------------------------------------------------------------------------- models
def build_pipeline(kind: str, device: str, seed: int = 0) -> Any:
    """An SDPipeline with random weights of architecture ``kind`` (sd14 | mid | tiny | demo), fp32,
    eval mode, on ``device``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from memtui.engine.model.pipeline import SDPipeline
    from memtui.engine.model.schedule import SD14_DDIM_CONFIG
    from memtui.engine.model.tokenizer import build_word_tokenizer

    if kind == "tiny":
        from memtui.engine.testkit import tiny_pipeline

        return tiny_pipeline(seed).to(device)
    if kind == "demo":
        from memtui.engine.model.loading import load_base
        from memtui.engine.model.shipped import base_dir

        return load_base(str(base_dir()), device=device, precision="fp32")
    torch.manual_seed(seed)
    if kind == "sd14":
        unet_kw = dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                       cross_attention_dim=768, attention_head_dim=8)
        vae_kw = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512)
        te_kw = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                     vocab_size=49408)
        n_down = 4
    elif kind == "mid":
        unet_kw = dict(sample_size=16, block_out_channels=(80, 160, 320, 320), layers_per_block=2,
                       cross_attention_dim=256, attention_head_dim=8, norm_num_groups=16)
        vae_kw = dict(block_out_channels=(32, 64, 128, 128), layers_per_block=1, sample_size=128, norm_num_groups=16)
        te_kw = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                     vocab_size=4096)
        n_down = 4
    else:
        raise ValueError(f"model must be sd14, mid, tiny or demo, got {kind!r}")
    tok = build_word_tokenizer(WORDS)
    vocab = tok.get_vocab()
    with torch.device(device):  # initialise in place (fast on a GPU)
        unet = UNet2DConditionModel(in_channels=4, out_channels=4,
                                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, **unet_kw)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * n_down,
                            up_block_types=("UpDecoderBlock2D",) * n_down, scaling_factor=0.18215, **vae_kw)
        te = CLIPTextModel(CLIPTextConfig(max_position_embeddings=77, hidden_act="quick_gelu",
                                          bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                                          pad_token_id=vocab["<|endoftext|>"], **te_kw))
    return SDPipeline(unet=unet, vae=vae, text_encoder=te, tokenizer=tok, scheduler_config=dict(SD14_DDIM_CONFIG),
                      source=f"bench:{kind}").eval()


def images_for(pipe: Any, n: int, seed: int = 1) -> torch.Tensor:
    """``n`` smooth random images ``[n, 3, S, S]`` in [-1, 1] at the model's native size (CPU)."""
    g = torch.Generator().manual_seed(seed)
    s = pipe.image_size
    low = torch.rand(n, 3, max(2, s // 16), max(2, s // 16), generator=g) * 2 - 1
    return torch.nn.functional.interpolate(low, size=(s, s), mode="bicubic", align_corners=False).clamp(-1, 1)


def demo_images(n: int, seed: int = 7) -> tuple[torch.Tensor, list[str]]:
    """``n`` demo-world images ``[n, 3, 32, 32]`` in [-1, 1] and their captions."""
    from memtui.engine.core.tensors import uint8_to_tensor
    from memtui.engine.demo.world import generate

    imgs, _shapes, captions = generate(n, seed)
    return uint8_to_tensor(imgs), captions


# ----------------------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Peak accelerator memory allocated (CUDA) or peak RSS (Linux) during the block, MiB."""
    out: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        out["kind"] = "accelerator"  # type: ignore[assignment]
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
        ok = True
    except OSError:
        ok = False
    yield out
    if ok:
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        if m:
            out["peak_mib"] = int(m.group(1)) / 1024
            out["kind"] = "rss"  # type: ignore[assignment]


class PassCounter:
    """Counts UNet item-passes (batch rows) of ``pipe.eps`` while installed."""

    def __init__(self, pipe: Any) -> None:
        self.pipe, self.items, self.calls = pipe, 0, 0

    def __enter__(self) -> "PassCounter":
        inner = self.pipe.eps

        def eps(z: torch.Tensor, t: Any, emb: torch.Tensor) -> torch.Tensor:
            self.items += int(z.shape[0])
            self.calls += 1
            return inner(z, t, emb)

        self.pipe.eps = eps
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.pipe.eps  # the class method again


def unet_flops(pipe: Any, batch: int) -> float:
    """FLOPs of one UNet forward at ``batch`` (``torch.utils.flop_counter``; a multiply-add = 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    c, h, w = pipe.latent_shape()
    z = torch.randn(batch, c, h, w, device=pipe.device, dtype=pipe.dtype)
    emb = pipe.encode_prompts([PROMPTS[0]] * batch)
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        unet(z, 500, encoder_hidden_states=emb.to(pipe.dtype))
    return float(fc.get_total_flops())


def unet_throughput(pipe: Any, batch: int, repeats: int) -> dict[str, float]:
    """Wall time of ``repeats`` UNet forwards at ``batch`` after a warm-up; TFLOP/s achieved."""
    c, h, w = pipe.latent_shape()
    z = torch.randn(batch, c, h, w, device=pipe.device, dtype=pipe.dtype)
    emb = pipe.encode_prompts([PROMPTS[0]] * batch).to(pipe.dtype)
    with torch.no_grad():
        for _ in range(2):
            pipe.unet(z, 500, encoder_hidden_states=emb)
        sync(pipe.device)
        t = time.perf_counter()
        for _ in range(repeats):
            pipe.unet(z, 500, encoder_hidden_states=emb)
        sync(pipe.device)
        secs = time.perf_counter() - t
    flops = unet_flops(pipe, batch)
    return {"batch": batch, "seconds_per_pass": secs / repeats, "flops_per_pass": flops,
            "tflops": flops * repeats / secs / 1e12}


@dataclass
class Side:
    """One side's measured run."""

    name: str
    seconds: float
    images: int
    unet_item_passes: int
    peak_mib: float | None
    psnr_mean: float
    z_T: torch.Tensor

    @property
    def images_per_hour(self) -> float:
        return self.images / self.seconds * 3600


def _config(method: str, steps: int) -> Any:
    from memtui.engine.inversion.config import InversionConfig

    return InversionConfig.from_dict({"method": method, "steps": steps, "seed": 42})


def _psnr(pipe_out: Any, x: torch.Tensor) -> float:
    from memtui.engine.data.images import to_uint8
    from memtui.engine.metrics import psnr_batch

    return float(psnr_batch(to_uint8(pipe_out.images_hat), to_uint8(x)).mean())


def official_style(pipe: Any, x: torch.Tensor, prompts: list[str], method: str, steps: int) -> Side:
    """(a): per image, batch 1, fp32, prompt re-encoded, a second pipeline resident."""
    from memtui.engine.inversion.api import invert_images

    second = copy.deepcopy(pipe)  # the official generation pipeline: resident, its memory counted
    cfg = _config(method, steps)
    zs, psnrs = [], []
    with peak_memory(pipe.device) as mem, PassCounter(pipe) as count:
        sync(pipe.device)
        t = time.perf_counter()
        for i in range(x.shape[0]):
            pipe.clear_prompt_cache()
            out = invert_images(pipe, x[i:i + 1], prompts[i:i + 1], cfg)
            zs.append(out.z_T.cpu())
            psnrs.append(_psnr(out, x[i:i + 1]))
        sync(pipe.device)
        secs = time.perf_counter() - t
    del second
    return Side("official-style loop", secs, x.shape[0], count.items, mem.get("peak_mib"),
                sum(psnrs) / len(psnrs), torch.cat(zs))


def memtui_best(pipe: Any, x: torch.Tensor, prompts: list[str], method: str, steps: int, batch: int) -> Side:
    """(b): batches of ``batch`` on the (already converted) pipeline, prompt cache on."""
    from memtui.engine.inversion.api import invert_images

    cfg = _config(method, steps)
    invert_images(pipe, x[:min(batch, x.shape[0])], prompts[:min(batch, x.shape[0])], cfg)  # warm-up / compile
    pipe.clear_prompt_cache()
    zs, psnrs = [], []
    with peak_memory(pipe.device) as mem, PassCounter(pipe) as count:
        sync(pipe.device)
        t = time.perf_counter()
        for i in range(0, x.shape[0], batch):
            out = invert_images(pipe, x[i:i + batch], prompts[i:i + batch], cfg)
            zs.append(out.z_T.cpu())
            psnrs += [_psnr(out, x[i:i + batch])] * out.z_T.shape[0]
        sync(pipe.device)
        secs = time.perf_counter() - t
    return Side("memtui best", secs, x.shape[0], count.items, mem.get("peak_mib"), sum(psnrs) / len(psnrs),
                torch.cat(zs))


def decoder_steps(pipe: Any, x: torch.Tensor, items: int, steps: int) -> dict[str, float]:
    """Decoder-inversion item-steps per second: ``items`` one by one vs in one batch."""
    from memtui.engine.inversion.decoder import decoder_invert, encoder_mean

    xs = x.repeat((items + x.shape[0] - 1) // x.shape[0], 1, 1, 1)[:items].to(pipe.device)
    init = encoder_mean(pipe, xs)
    decoder_invert(pipe, xs[:1], init[:1], steps=2)  # warm-up
    sync(pipe.device)
    t = time.perf_counter()
    for i in range(items):
        decoder_invert(pipe, xs[i:i + 1], init[i:i + 1], steps=steps)
    sync(pipe.device)
    seq = time.perf_counter() - t
    t = time.perf_counter()
    decoder_invert(pipe, xs, init, steps=steps)
    sync(pipe.device)
    bat = time.perf_counter() - t
    return {"items": items, "steps": steps, "sequential_item_steps_per_s": items * steps / seq,
            "batched_item_steps_per_s": items * steps / bat, "speedup": seq / bat}


def device_peak(device: torch.device, given: float | None) -> tuple[str, float | None]:
    """(device name, dense bf16 peak TFLOP/s or None)."""
    if device.type != "cuda":
        return (platform.processor() or platform.machine() or "cpu"), given
    name = torch.cuda.get_device_name(device)
    if given:
        return name, given
    for key, val in sorted(PEAK_BF16_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if key in name:
            return name, val
    return name, None


# ----------------------------------------------------------------------------------- main
def measure(args: argparse.Namespace) -> dict[str, Any]:
    from memtui.engine.model.pipeline import parse_dtype
    from memtui.engine.model.speed import apply_speed_settings

    device = torch.device(args.device)
    t_start = time.perf_counter()
    pipe = build_pipeline(args.model, str(device))
    if args.model == "demo":  # its own world's images: ReNoise's official regulariser diverges (NaN) on
        x, prompts = demo_images(args.images)  # its 4x4 latents of smooth random images
    else:
        x = images_for(pipe, args.images)
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    a = official_style(pipe, x, prompts, args.method, args.steps)
    flops_item = unet_flops(pipe, 1)
    dec = decoder_steps(pipe, x, args.decoder_items, args.decoder_steps)
    pipe.to(dtype=parse_dtype(args.precision))
    settings = apply_speed_settings(pipe, compile=args.compile)
    b = memtui_best(pipe, x, prompts, args.method, args.steps, args.batch)
    unet = unet_throughput(pipe, args.batch, args.unet_repeats)
    name, peak = device_peak(device, args.peak_tflops)
    run_tflops = b.unet_item_passes * flops_item / b.seconds / 1e12
    return {
        "device": name, "model": args.model, "image_size": pipe.image_size, "method": args.method,
        "steps": args.steps, "images": args.images, "batch": args.batch, "precision": args.precision,
        "settings": settings, "torch": torch.__version__, "date": _dt.datetime.now(_dt.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC"),
        "official_style": {"seconds": a.seconds, "images_per_hour": a.images_per_hour,
                           "unet_item_passes_per_image": a.unet_item_passes / a.images, "peak_mib": a.peak_mib,
                           "psnr_mean": a.psnr_mean},
        "memtui": {"seconds": b.seconds, "images_per_hour": b.images_per_hour,
                   "unet_item_passes_per_image": b.unet_item_passes / b.images, "peak_mib": b.peak_mib,
                   "psnr_mean": b.psnr_mean},
        "speedup": a.seconds / b.seconds,
        "max_abs_diff_z_T": float((a.z_T - b.z_T).abs().max()),
        "unet": {"flops_per_item_pass": flops_item, **unet,
                 "tflops_whole_run": run_tflops, "peak_bf16_tflops": peak,
                 "fraction_of_peak": (unet["tflops"] / peak) if peak else None},
        "memory_kind": "accelerator" if device.type == "cuda" else "rss",
        "decoder_inversion": dec,
        "total_seconds": time.perf_counter() - t_start,
    }


def table(r: dict[str, Any]) -> str:
    a, b, u, d = r["official_style"], r["memtui"], r["unet"], r["decoder_inversion"]
    mem = "peak accelerator MiB" if r["memory_kind"] == "accelerator" else "peak RSS MiB"
    frac = f"{u['fraction_of_peak']:.1%} of {u['peak_bf16_tflops']:.0f}" if u["fraction_of_peak"] else "peak unknown"
    lines = [
        f"Device: **{r['device']}**, torch {r['torch']}, {r['date']}. Model `{r['model']}` at {r['image_size']} px, "
        f"{r['method']} {r['steps']} steps, {r['images']} images; memtui at batch {r['batch']}, {r['precision']}, "
        f"channels_last {r['settings']['channels_last']}, compiled {r['settings']['compiled']}, attention "
        f"{', '.join(r['settings']['attention']) or '?'}.",
        "",
        f"| | images/hour | s/image | UNet passes/image | {mem} | mean PSNR dB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in (("official-style loop (batch 1, fp32)", a), ("memtui best", b)):
        peak = f"{s['peak_mib']:.0f}" if s["peak_mib"] is not None else "–"
        lines.append(f"| {name} | {s['images_per_hour']:.0f} | {s['seconds'] / r['images']:.3f} | "
                     f"{s['unet_item_passes_per_image']:.0f} | {peak} | {s['psnr_mean']:.2f} |")
    lines += [
        "",
        f"- **speed-up: {r['speedup']:.2f}×** (max |Δ z_T| between the two: {r['max_abs_diff_z_T']:.2g})",
        f"- UNet: {u['flops_per_item_pass'] / 1e9:.4g} GFLOP per item-pass; at batch {u['batch']}: "
        f"{u['tflops']:.2f} TFLOP/s ({frac}); over the whole memtui run: {u['tflops_whole_run']:.2f} TFLOP/s",
        f"- decoder inversion ({d['items']} items, {d['steps']} steps): {d['sequential_item_steps_per_s']:.1f} "
        f"item-steps/s one by one, {d['batched_item_steps_per_s']:.1f} batched ({d['speedup']:.2f}×)",
        f"- the whole benchmark took {r['total_seconds']:.0f} s",
    ]
    return "\n".join(lines)


def write_doc(r: dict[str, Any], command: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    block = f"{START}\n\nCommand: `{command}`\n\n{table(r)}\n\n{END}"
    if START in text and END in text:
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the test kit's model on the CPU, few steps (seconds)")
    ap.add_argument("--model", choices=("sd14", "mid", "tiny", "demo"))
    ap.add_argument("--device", help="default: cuda if available, else cpu")
    ap.add_argument("--images", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--method", default="renoise")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--precision", choices=("fp32", "fp16", "bf16"))
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet for memtui's side")
    ap.add_argument("--decoder-items", type=int, default=11)
    ap.add_argument("--decoder-steps", type=int)
    ap.add_argument("--unet-repeats", type=int)
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, when not in the table")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--json", type=Path, help="write the figures as JSON here")
    ap.add_argument("--write", action="store_true", help="write docs/benchmarks.md also with --tiny")
    ap.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    args.device = args.device or ("cuda" if cuda and not args.tiny else "cpu")
    on_gpu = args.device.startswith("cuda")
    args.model = args.model or ("tiny" if args.tiny or not on_gpu else "sd14")
    small = args.model in ("tiny", "demo")
    args.images = args.images or (4 if small else 8)
    args.steps = args.steps or (4 if args.tiny else 50)
    args.batch = args.batch or (args.images if small else 8)
    args.precision = args.precision or ("bf16" if on_gpu else "fp32")
    args.decoder_steps = args.decoder_steps or (5 if args.tiny else 100)
    args.unet_repeats = args.unet_repeats or (3 if args.tiny else 20)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = measure(args)
    print(table(r))
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    if not args.no_write and (args.write or not args.tiny):
        write_doc(r, "python benchmarks/bench_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv))
    return r


if __name__ == "__main__":
    main()
