"""Wall time of one 8-cell sweep on the demo world with 1 and with 2 local workers (issue 15).

The grid: 2 checkpoints (the demo's base and its ESD twin with "circle" erased) × 2 inversion
methods (DDIM, FPI) × 2 step counts (20, 50), the concept analysis over 8 + 8 demo items each,
every cell single-threaded (``OMP_NUM_THREADS=1``), so 2 workers use the machine's 2 cores. Each
worker count runs into a fresh folder. Prints a Markdown table for ``docs/benchmarks.md``.

Usage: ``python benchmarks/sweep_workers.py [--items 8] [--workers 1 2] [--keep DIR]``.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SWEEP = """\
name = "bench"
methods = ["ddim", "fpi"]
analyses = ["concept"]

[spec]
max_items = {items}
batch_size = 8
device = "cpu"

[[base]]
name = "demo"
path = "{base}"

[[checkpoint]]
name = "erased-circle"
path = "{erased}"
concept = "circle"
erasure = "esd"

[[checkpoint]]
name = "original"
concept = "circle"

[concept.circle]
erased = "{erased_set}"
reference = "{reference_set}"
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=8, help="items per set and cell")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--keep", type=Path, help="write the sweeps here and keep them (default: a temporary folder)")
    args = ap.parse_args(argv)
    from memtui.engine.demo import base_dir, erased_path
    from memtui.engine.demo.runner import ensure_demo_data

    rows = []
    with tempfile.TemporaryDirectory(prefix="memtui-sweep-bench-") as tmp:
        t = args.keep or Path(tmp)
        if args.keep:
            if t.exists() and any(t.iterdir()):
                ap.error(f"--keep {t} must be a new or empty folder")
            t.mkdir(parents=True, exist_ok=True)
        erased_set, reference_set = ensure_demo_data(t, n_per_set=args.items)
        for steps in (20, 50):
            text = SWEEP.format(items=args.items, base=base_dir(), erased=erased_path(),
                                erased_set=erased_set, reference_set=reference_set)
            (t / f"sweep{steps}.toml").write_text(text.replace("device = \"cpu\"", f"device = \"cpu\"\nsteps = {steps}"))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for n in args.workers:
            t0 = time.monotonic()
            for steps in (20, 50):  # two sweep files of 4 cells each: 8 cells
                out = t / f"out-w{n}-s{steps}"
                r = subprocess.run([sys.executable, "-m", "memtui", "--batch", "--sweep", str(t / f"sweep{steps}.toml"),
                                    "--out", str(out), "--workers", str(n)], env=env, capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stderr, file=sys.stderr)
                    return 1
            rows.append((n, time.monotonic() - t0))
            print(f"sweep_workers: {n} worker(s): {rows[-1][1]:.1f} s", file=sys.stderr, flush=True)
    base_s = rows[0][1]
    print(f"8 cells (demo world, 2 checkpoints × DDIM/FPI × 20/50 steps, {args.items} + {args.items} items each, "
          f"1 thread per cell), {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}:\n")
    print("| workers | wall time s | speed-up |\n|---|---|---|")
    for n, s in rows:
        print(f"| {n} | {s:.1f} | {base_s / s:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
