"""Re-measure the fault campaign's lock and resume figures (issue 12) on the tiny pipeline, with real
``memtui --batch`` processes:

1. ``kill -9`` a run mid-way, resume at once: how many resumes are refused ("being run by process N")?
2. start two runs on one fresh ``--out`` together: in how many trials did both run?
3. after each kill + resume: items lost or duplicated (every item exactly one ok record, one
   ``item_done`` in total at most per item across sessions, nothing missing).

Usage: ``python benchmarks/campaign_lock.py [--trials 20] [--out docs/campaign.md]``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import write_official  # noqa: E402


def batch_cmd(base: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "memtui", "--batch", "--base", str(base), "--erased", str(data),
            "--reference", str(data), "--method", "ddim", "--steps", "4", "--batch-size", "1",
            "--device", "cpu", "--out", str(out)]


def records(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def kill_and_resume(base: Path, data: Path, out: Path, n_items: int) -> tuple[bool, int, int]:
    """(resume refused?, items lost, items duplicated) for one trial."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(batch_cmd(base, data, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(records(out)) < 2 and p.poll() is None:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    # resume at once, before anyone reaps the killed process (it stays a zombie until p.wait())
    r = subprocess.run(batch_cmd(base, data, out), capture_output=True, text=True, env=env)
    p.wait()
    refused = r.returncode == 3
    if refused:
        r = subprocess.run(batch_cmd(base, data, out), capture_output=True, text=True, env=env)
    recs = records(out)
    ok = {}
    for rec in recs:
        if rec.get("status") == "ok":
            ok[rec["item_id"]] = ok.get(rec["item_id"], 0) + 1
    lost = n_items - len(ok)
    dup = sum(c - 1 for c in ok.values())
    return refused, lost, dup


def start_together(base: Path, data: Path, out: Path, n_items: int) -> tuple[bool, bool]:
    """(both ran concurrently: two ``started`` events or an item computed twice; the later process
    started only after the first had finished and resumed a finished run) for two runs started
    together on one fresh --out."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ps = [subprocess.Popen(batch_cmd(base, data, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
          for _ in range(2)]
    for p in ps:
        p.wait()
    types = [json.loads(x)["type"] for x in (out / "events.jsonl").read_text().splitlines() if x.strip()]
    both = types.count("started") > 1 or types.count("item_done") > n_items
    after = "resumed" in types and types.index("resumed") > types.index("finished")
    return both, after


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None, help="append the figures to this Markdown file")
    a = ap.parse_args()
    from memtui.engine.model.loading import save_pipeline
    from memtui.engine.testkit import tiny_pipeline

    root = Path(tempfile.mkdtemp(prefix="campaign-"))
    base = save_pipeline(tiny_pipeline(seed=0), root / "pipe")
    data = write_official(root / "data", n=4)
    n_items = 8  # 4 erased + 4 reference (the same folder)
    refused = lost = dup = both = after = 0
    t0 = time.monotonic()
    for i in range(a.trials):
        r, l_, d = kill_and_resume(base, data, root / f"kill{i}", n_items)
        refused += r
        lost += l_
        dup += d
        b, late = start_together(base, data, root / f"together{i}", n_items)
        both += b
        after += late
    text = (f"fault campaign re-measured ({a.trials} trials each, tiny pipeline, {time.monotonic() - t0:.0f} s):\n"
            f"- immediate resumes refused after kill -9: {refused} of {a.trials}\n"
            f"- simultaneous starts on one fresh --out that both ran: {both} of {a.trials} "
            f"(in {after} the second process started only after the first had finished and resumed it)\n"
            f"- items lost after kill -9 + resume: {lost}; ok records duplicated: {dup}\n")
    print(text)
    if a.out:
        with open(a.out, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
