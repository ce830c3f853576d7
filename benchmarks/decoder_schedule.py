"""Decoder inversion: PSNR against Adam steps for the official optimiser (Adam, lr 1e-2, constant,
3000 steps) and for cosine-decayed alternatives at smaller step budgets (issue 16, part 2).

On the demo world's trained VAE (``engine/demo/weights``, 32 px) with ``--images`` demo images
(half circles, half other shapes), initialised at the encoder mean as the SIB does. For the official
run the curve is the float PSNR ``10·log10(1 / MSE)`` of the (unclamped) decoding at each step, mean
over images, at the listed steps, and the final uint8 PSNR (the SIB's ``psnr_decoder``). For each
alternative (``schedule = cosine``, lr, budget) the final uint8 PSNR and whether it reaches the
official final PSNR. Prints Markdown for ``docs/benchmarks.md``.

Usage: ``python benchmarks/decoder_schedule.py [--images 8] [--steps 3000]``.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

CHECKPOINTS = (0, 50, 100, 250, 500, 1000, 2000, 3000)
ALTERNATIVES = ((3e-2, 1000), (1e-1, 1000), (3e-2, 500), (1e-1, 500), (1e-1, 250), (3e-1, 250))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    from memtui.engine.core.tensors import uint8_to_tensor
    from memtui.engine.demo.world import generate
    from memtui.engine.inversion.decoder import decoder_invert, encoder_mean
    from memtui.engine.model.loading import load_base
    from memtui.engine.model.shipped import base_dir

    pipe = load_base(str(base_dir()), device="cpu", precision="fp32")
    half = args.images // 2
    a, _, _ = generate(half, 11, shapes="circle")
    b, _, _ = generate(args.images - half, 12, shapes=("square", "triangle", "star"))
    x = uint8_to_tensor(np.concatenate([a, b]))
    init = encoder_mean(pipe, x)
    t = time.monotonic()
    off = decoder_invert(pipe, x, init, steps=args.steps, lr=1e-2)
    secs = time.monotonic() - t
    curve = 10 * np.log10(1.0 / np.maximum(off.history, 1e-12))  # [steps, B]: before each step
    target = float(off.psnr.mean())
    print(f"demo VAE, {args.images} images, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
          f"official run {secs:.0f} s ({args.steps / secs:.0f} steps/s)\n")
    print("| step | official float PSNR dB |\n|---:|---:|")
    for s in CHECKPOINTS:
        if s < args.steps:
            print(f"| {s} | {curve[s].mean():.2f} |")
    print(f"| {args.steps} (final, uint8) | **{target:.2f}** |\n")
    print("| schedule | lr | steps | final uint8 PSNR dB | ≥ official final | steps / official |\n"
          "|---|---:|---:|---:|---|---:|")
    for lr, steps in ALTERNATIVES:
        r = decoder_invert(pipe, x, init, steps=steps, lr=lr, schedule="cosine")
        p = float(r.psnr.mean())
        print(f"| cosine | {lr:g} | {steps} | {p:.2f} | {'yes' if p >= target else 'no'} | "
              f"{steps / args.steps:.2f} |")
    first = next((s for s in range(args.steps) if curve[s].mean() >= curve[-1].mean() - 0.1), None)
    print(f"\nThe official run is within 0.1 dB of its last float PSNR from step {first}.")


if __name__ == "__main__":
    main()
