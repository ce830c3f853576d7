"""Images per second of batched diffusion inversion vs. a plain per-image loop (batch 1, one image
at a time, as the official code runs), for DDIM and ReNoise on the tiny test-kit models.

    .venv/bin/python benchmarks/bench_inversion.py            # measure, print, update docs/benchmarks.md
    .venv/bin/python benchmarks/bench_inversion.py --no-write # measure and print only

Both modes run in the same process on the same pipeline (loaded once), after a warm-up, and are
interleaved repeat by repeat so that load from other processes hits both alike; the best (minimum)
wall time of ``--repeats`` is reported. Peak RSS per mode is read from ``/proc/self/status``
(VmHWM, reset through ``/proc/self/clear_refs`` before each mode; Linux only, else omitted).
The batched latents are also compared with the per-image ones (max |Δ|): batching must not change
results.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench_inversion:start -->", "<!-- bench_inversion:end -->"
PROMPTS = ("a photo of a red circle", "a blue square", "a painting of a church", "a photo of a dog")


# ----------------------------------------------------------------------------------- machine
def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import diffusers

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {
        "cpu": cpu, "cores": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()),
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load average at start (1/5/15 min)": load,
    }


# ------------------------------------------------------------------------------------ memory
def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_mib(field: str) -> float | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) / 1024 if m else None


# ------------------------------------------------------------------------------------- timing
def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor, float | None]:
    """(wall seconds, result, peak RSS MiB during the call or None)."""
    ok = _reset_peak_rss()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    return dt, out, (_rss_mib("VmHWM") if ok else None)


def make_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` smooth random RGB images [n, 3, size, size] in [-1, 1] (blurred noise, deterministic)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 2 - 1).clamp(-1, 1)


def run(args: argparse.Namespace) -> tuple[list[dict], dict[str, str]]:
    from memtui.engine.inversion.api import InversionConfig, invert_images
    from memtui.engine.testkit import tiny_pipeline

    torch.set_num_threads(args.threads)
    pipe = tiny_pipeline(0)
    images = make_images(args.images, pipe.image_size)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    info = machine()
    rows = []
    for method in args.methods:
        steps = args.steps if method == "ddim" else args.renoise_steps
        cfg = InversionConfig(method=method, steps=steps)

        def invert(imgs: torch.Tensor, prm: list[str]) -> torch.Tensor:
            return _zt(invert_images(pipe, imgs, prm, cfg))

        def loop() -> torch.Tensor:
            return torch.cat([invert(images[i:i + 1], prompts[i:i + 1]) for i in range(args.images)])

        def batched() -> torch.Tensor:
            b = args.batch
            return torch.cat([invert(images[i:i + b], prompts[i:i + b]) for i in range(0, args.images, b)])

        invert(images[:2], prompts[:2])  # warm-up (allocator, kernels, prompt cache)
        t_loop, t_batch, rss_loop, rss_batch = [], [], [], []
        for _ in range(args.repeats if method == "ddim" else args.renoise_repeats):
            dt, z_loop, rss = timed(loop)
            t_loop.append(dt), rss_loop.append(rss)
            dt, z_batch, rss = timed(batched)
            t_batch.append(dt), rss_batch.append(rss)
        diff = float((z_loop - z_batch).abs().max())
        best_loop, best_batch = min(t_loop), min(t_batch)
        rows.append({
            "method": method, "steps": steps, "images": args.images, "batch": args.batch,
            "loop_ips": args.images / best_loop, "batch_ips": args.images / best_batch,
            "speedup": best_loop / best_batch, "loop_s": t_loop, "batch_s": t_batch,
            "rss_loop": _max(rss_loop), "rss_batch": _max(rss_batch), "max_abs_diff": diff,
        })
        print(_row_md(rows[-1]), flush=True)
    return rows, info


def _zt(out: object) -> torch.Tensor:
    """The seeds z_T [B, C, h, w] of an ``InversionOutput``."""
    return out.z_T  # type: ignore[attr-defined]


def _max(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return max(vals) if vals else None


def _mib(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


HEADER = ("| method | steps | images | batch | per-image loop (img/s) | batched (img/s) | speed-up | "
          "peak RSS loop / batched (MiB) | max abs Δ z_T |\n|---|---|---|---|---|---|---|---|---|")


def _row_md(r: dict) -> str:
    return (f"| {r['method']} | {r['steps']} | {r['images']} | {r['batch']} | {r['loop_ips']:.2f} | "
            f"{r['batch_ips']:.2f} | **{r['speedup']:.2f}×** | {_mib(r['rss_loop'])} / "
            f"{_mib(r['rss_batch'])} | {r['max_abs_diff']:.1e} |")


def render(rows: list[dict], info: dict[str, str], args: argparse.Namespace) -> str:
    lines = [START, "", f"Command: `.venv/bin/python benchmarks/bench_inversion.py "
             f"--images {args.images} --batch {args.batch} --steps {args.steps} "
             f"--renoise-steps {args.renoise_steps} --threads {args.threads}`", "",
             "| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    lines += ["", HEADER, *(_row_md(r) for r in rows), "",
              "All timings (s, per repeat, loop / batched): "
              + "; ".join(f"{r['method']}: " + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(r["loop_s"], r["batch_s"]))
                          for r in rows), "", END]
    return "\n".join(lines)


def write_doc(block: str) -> None:
    text = DOC.read_text() if DOC.exists() else ""
    if START in text and END in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        text = (text.rstrip() + "\n\n" if text else "# Benchmarks\n\n") + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="DDIM inversion steps")
    ap.add_argument("--renoise-steps", type=int, default=10, help="ReNoise inversion steps")
    ap.add_argument("--repeats", type=int, default=3, help="DDIM repeats (best is reported)")
    ap.add_argument("--renoise-repeats", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=["ddim", "renoise"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a busy shared CPU, 2 threads spin against other load)")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows, info = run(args)
    block = render(rows, info, args)
    if not args.no_write:
        write_doc(block)
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    for r in rows:
        if r["speedup"] < 3.0:
            print(f"note: {r['method']} speed-up {r['speedup']:.2f}x is below the 3x target", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
