"""How cost grows with the work on the CPU (issue 16, item 4): time and peak RSS of the
official-style loop and of memtui at batch sizes 1, 8 and 64, for 1, 8 and 64 images and 10 and 50
ReNoise steps, on the demo world's model with its own images.

    python benchmarks/scaling.py [--threads 1] [--json FILE] [--no-write]

Both sides are :mod:`bench_gpu`'s (``official_style``: batch 1, fp32, prompt re-encoded, a second
pipeline resident; ``memtui_best``: batches of B, prompt cache). Peak RSS is the process's high-water
mark reset before each measurement (``/proc/self/clear_refs``), MiB. The table goes between
``<!-- scaling:start -->`` and ``<!-- scaling:end -->`` of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gpu as bg  # noqa: E402

START, END = "<!-- scaling:start -->", "<!-- scaling:end -->"


def measure(images: tuple[int, ...], steps: tuple[int, ...], batches: tuple[int, ...]) -> list[dict]:
    pipe = bg.build_pipeline("demo", "cpu")
    x_all, p_all = bg.demo_images(max(images))
    bg.memtui_best(pipe, x_all[:2], p_all[:2], "renoise", 2, 2)  # warm-up (allocator, kernels)
    rows = []
    for s in steps:
        for n in images:
            x, p = x_all[:n], p_all[:n]
            a = bg.official_style(pipe, x, p, "renoise", s)
            rows.append({"side": "official-style", "images": n, "steps": s, "batch": 1, "seconds": a.seconds,
                         "peak_mib": a.peak_mib, "psnr": a.psnr_mean})
            print(rows[-1], flush=True)
            for b in batches:
                if b > n:
                    continue
                m = bg.memtui_best(pipe, x, p, "renoise", s, b)
                rows.append({"side": "memtui", "images": n, "steps": s, "batch": b, "seconds": m.seconds,
                             "peak_mib": m.peak_mib, "psnr": m.psnr_mean, "ratio": a.seconds / m.seconds})
                print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict], threads: int) -> str:
    when = _dt.date.today().isoformat()
    out = [START, f"Measured {when} by `python benchmarks/scaling.py` (demo model, 32 px, its own images, "
           f"ReNoise official configuration, fp32, {threads} torch thread(s), 2 shared cores).", "",
           "| steps | images | side | batch | total s | s/image | peak RSS MiB | × official-style |",
           "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}×" if "ratio" in r else "1"
        peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") else "n/a"
        out.append(f"| {r['steps']} | {r['images']} | {r['side']} | {r['batch']} | {r['seconds']:.2f} | "
                   f"{r['seconds'] / r['images']:.3f} | {peak} | {ratio} |")
    out.append(END)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    rows = measure(tuple(args.images), tuple(args.steps), tuple(args.batches))
    block = markdown(rows, args.threads)
    print(block)
    print(f"({time.perf_counter() - t:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if not args.no_write:
        doc = bg.DOC.read_text()
        if START in doc:
            doc = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _m: block, doc, flags=re.S)
        else:
            doc = doc.rstrip() + "\n\n" + block + "\n"
        bg.DOC.write_text(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
