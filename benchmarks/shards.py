"""Wall time of one demo-world run with ``--shards 1`` and ``--shards 2`` (issue 15, part 3).

The run: the concept analysis, FPI inversion at 50 steps, ``--max-items N`` erased + N reference
demo items, ``--device cpu``. Unsharded it runs with ``OMP_NUM_THREADS`` = all cores; each of K
shards gets cores / K (memtui's default), so both use the whole machine. Each K runs into a fresh
folder; the records are checked equal across K (PSNR and NLL to 1e-4: the batches differ).
Prints a Markdown table for ``docs/benchmarks.md``.

Usage: ``python benchmarks/shards.py [--items 16] [--shards 1 2] [--method fpi] [--steps 50]``.
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

from memtui.engine.runs.store import RunDir


def run(out: Path, shards: int, items: int, method: str, steps: int) -> float:
    env = dict(os.environ)
    if shards == 1:
        env["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
    else:
        env.pop("OMP_NUM_THREADS", None)  # each shard: cores / K
    cmd = [sys.executable, "-m", "memtui", "--batch", "--demo", "--analysis", "concept", "--method", method,
           "--steps", str(steps), "--max-items", str(items), "--device", "cpu", "--shards", str(shards),
           "--out", str(out)]
    t = time.monotonic()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--method", default="fpi")
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times, records = {}, {}
        for k in args.shards:
            out = Path(tmp) / f"k{k}"
            times[k] = run(out, k, args.items, args.method, args.steps)
            records[k] = RunDir(out).read_results()
        base = records[args.shards[0]]
        worst = max(abs(r[key] - base[i][key]) for recs in records.values() for i, r in recs.items()
                    for key in ("psnr", "nll"))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; concept, {args.method} "
          f"{args.steps} steps, {args.items} + {args.items} demo items; largest PSNR/NLL difference "
          f"across K: {worst:.2g}\n")
    print("| shards | wall s | speed-up |\n|---:|---:|---:|")
    t1 = times[args.shards[0]]
    for k in args.shards:
        print(f"| {k} | {times[k]:.1f} | {t1 / times[k]:.2f}× |")


if __name__ == "__main__":
    main()
