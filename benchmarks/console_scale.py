"""The console at scale (issue 17, item 4): 500 run directories and a run of 10,000 items.

Synthetic run directories in the public run format (docs/run-format.md: spec.json, events.jsonl,
results.jsonl, summary.json; no images) are written to a temporary folder; the console is driven
headless (Textual's ``run_test``, 120×36) and timed:

- **open**: from the app's start until the Browse runs table lists every run;
- **rescan**: one more Browse scan of the unchanged runs folder and the table sync (what the 2 s
  timer does; the scan itself runs in a worker thread);
- **run screen**: from pressing Enter on the 10,000-item run until its items table holds every row;
- **filter**: typing a ``/`` filter on the items table until the matching rows alone are shown;
- **tail**: 200 more records appended to a live run's results.jsonl until the table shows them.

Each figure is the best of ``--repeats`` (wall seconds, this machine's load included).
Usage: ``python benchmarks/console_scale.py [--runs 500] [--items 10000] [--repeats 3]``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

SETS = ("erased", "reference")


def record(i: int, set_name: str) -> dict[str, Any]:
    """One results.jsonl record of the documented shape."""
    return {"item_id": f"{set_name}-{i:05d}", "set": set_name, "prompt": f"a photo of a {set_name} thing {i}",
            "source": f"/data/{set_name}/{i}.png", "status": "ok", "error": None,
            "psnr": 20.0 + (i * 7919 % 1000) / 100.0, "psnr_seed_only": 19.0 + (i * 104729 % 1000) / 100.0,
            "nll": 355.0 + (i * 31 % 200) / 10.0, "seed_dim": 256, "z_shape": [4, 8, 8]}


def write_run(root: Path, name: str, items: int, finished: bool = True) -> Path:
    """A concept run directory of ``items`` records (half erased, half reference)."""
    run = root / name
    run.mkdir(parents=True)
    spec = {"analysis": "concept", "method": "renoise", "steps": 50, "concept": "parachute",
            "ablated": f"/ckpt/esd-{name}.safetensors", "format_version": 2}
    (run / "spec.json").write_text(json.dumps(spec))
    recs = [record(i, SETS[i % 2]) for i in range(items)]
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    ts = "2026-01-01T00:00:00.000Z"
    events = [{"ts": ts, "type": "started", "total": items}]
    if finished:
        events.append({"ts": ts, "type": "finished"})
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    if finished:
        sets = {s: {m: {"count": items // 2, "mean": 25.0 if m == "psnr" else 365.0, "std": 2.0}
                    for m in ("psnr", "nll")} for s in SETS}
        (run / "summary.json").write_text(json.dumps(
            {"analysis": "concept", "sets": sets, "relative_distance": 0.8, "erased_normal": 10.0,
             "reference_normal": 12.5, "erased_reference": 3.0, "d": 256,
             "normal": {"mode": "exact", "d": 256, "mean": 363.19, "std": 11.31}}))
    return run


async def drive(runs_dir: Path, n_runs: int, big: str, live: Path, items: int) -> dict[str, float]:
    """One console session: the timings of one repeat."""
    from memtui.config import Config
    from memtui.app import MemtuiApp
    from memtui.screens.browse import BrowseScreen
    from memtui.widgets.items_table import ItemsTable
    from textual.widgets import DataTable

    app = MemtuiApp(config=Config(runs_dir=str(runs_dir), path=runs_dir / "config.toml"), gpu=False,
                    show_eta=False)
    out: dict[str, float] = {}

    async def until(cond, limit_s: float = 600.0) -> None:
        t_end = time.perf_counter() + limit_s
        while not cond():
            if time.perf_counter() > t_end:
                raise TimeoutError("the console did not get there in time")
            await asyncio.sleep(0.005)

    t0 = time.perf_counter()
    async with app.run_test(size=(120, 36)) as pilot:
        def runs_rows() -> int:
            screen = app.screen
            return screen.query_one("#runs-table", DataTable).row_count if isinstance(screen, BrowseScreen) else -1

        await until(lambda: runs_rows() == n_runs)
        out["open"] = time.perf_counter() - t0
        browse = app.screen
        await pilot.pause(0.5)
        t1 = time.perf_counter()  # what the 2 s timer's worker does, then the table sync
        browse.scanned["runs"] = browse.scanner.scan(runs_dir)
        browse.show_entries("runs")
        out["rescan"] = time.perf_counter() - t1

        app.open_run(runs_dir / big)
        t2 = time.perf_counter()
        await until(lambda: len(app.screen.query(ItemsTable)) == 1
                    and app.screen.query_one(ItemsTable).row_count == items)
        out["run screen"] = time.perf_counter() - t2

        table = app.screen.query_one(ItemsTable)
        t3 = time.perf_counter()
        await pilot.press("slash", *"reference 0001")
        await until(lambda: table.row_count == sum(1 for i in range(items)
                                                    if i % 2 == 1 and "0001" in f"{i:05d}"))
        out["filter"] = time.perf_counter() - t3
        await pilot.press("escape")
        await until(lambda: table.row_count == items)
        app.pop_screen()

        n_live = len((live / "results.jsonl").read_text().splitlines())
        app.open_run(live)
        await until(lambda: len(app.screen.query(ItemsTable)) == 1
                    and app.screen.query_one(ItemsTable).row_count == n_live)
        table = app.screen.query_one(ItemsTable)
        t4 = time.perf_counter()
        with open(live / "results.jsonl", "a") as f:
            for i in range(n_live, n_live + 200):
                f.write(json.dumps(record(i, SETS[i % 2])) + "\n")
        await until(lambda: table.row_count == n_live + 200)
        out["tail"] = time.perf_counter() - t4
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--per-run", type=int, default=20, help="records of each of the other runs")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        root.mkdir()
        t = time.perf_counter()
        big = "run-0000-big"
        write_run(root, big, args.items)
        for i in range(1, args.runs - 1):
            write_run(root, f"run-{i:04d}", args.per_run)
        live = write_run(root, f"run-{args.runs - 1:04d}-live", args.per_run, finished=False)
        print(f"wrote {args.runs} runs ({args.items} + {args.runs - 1} × {args.per_run} items) "
              f"in {time.perf_counter() - t:.1f} s")
        for r in range(args.repeats):
            # the live run: a process holding its lock (this one), so the Run screen tails it
            from memtui.engine.runs.store import RunDir

            lock = RunDir(live)
            lock.acquire_lock()
            try:
                got = asyncio.run(drive(root, args.runs, big, live, args.items))
            finally:
                lock.release_lock()
            print(f"repeat {r + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in got.items()), flush=True)
            for k, v in got.items():
                best[k] = min(best.get(k, v), v)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load}")
    print("| step | best of %d (s) |\n|---|---|" % args.repeats)
    for k, v in best.items():
        print(f"| {k} | {v:.2f} |")


if __name__ == "__main__":
    main()
