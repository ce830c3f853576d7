"""One run over several writers (``--shards K``, ``memtui.engine.runs.shards``), on the tiny pipeline:

- a sharded run of every analysis equals the same run unsharded (records to 1e-6, summary), each
  item recorded once in ``results.jsonl`` after the session, no shard results file left, and a
  unit (a memories / scramble target with its items) computed by one shard;
- the reading side: shard records are newer than the run file's, folding is idempotent, a live
  shard makes the run ``running`` and refuses another session;
- ``kill -9`` of the holder mid-run: its shards finish on their own, the run reads ``incomplete``,
  the same command folds and summarizes (nothing lost or duplicated); ``kill -9`` of one shard:
  the command fails naming the shard's log, the same command resumes it; SIGINT stops every shard,
  resumable.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memtui.engine import analyses
from memtui.engine.runs.spec import RunSpec
from memtui.engine.runs.store import RunDir, RunLockedError

from tests.helpers import write_official

pytestmark = [pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
              pytest.mark.usefixtures("_one_thread")]  # the shards get one thread each here (2 cores / 2)

ANALYSES = list(analyses.main_names())
PER_SESSION = {"timing", "versions", "shards", "batch_size"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sharddata")
    csv = root / "prompts.csv"
    csv.write_text("case_number,prompt,evaluation_seed,evaluation_guidance\n"
                   "0,red circle,1,7.5\n1,blue square,2,3.0\n2,a photo of church,3,\nx,bad row,4,\n")
    return {"erased": write_official(root / "erased", 3), "reference": write_official(root / "reference", 6, 50),
            "prompts": csv}


def spec_of(analysis: str, pipe_dir: Path, data: dict[str, Path], shards: int) -> RunSpec:
    d: dict[str, Any] = {"analysis": analysis, "base": str(pipe_dir), "batch_size": 1, "device": "cpu",
                         "shards": shards}
    if analysis == "generate":
        d["options"] = {"prompts": str(data["prompts"]), "steps": 3}
    else:
        d.update(erased=str(data["erased"]), reference=str(data["reference"]), method="ddim", steps=3)
        if analysis == "memories":  # 2 targets x (target, 2 memories, 2 controls)
            d["options"] = {"num_targets": 2, "num_supports": 2, "vae_steps": 2}
        elif analysis == "scramble":  # 2 targets x (original, 2 scrambles)
            d["options"] = {"num_targets": 2, "num_scrambles": 2, "grid": 2}
    return RunSpec.from_dict(d)


def _numbers(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in ("seconds",)}


def _close(a: Any, b: Any, tol: float = 1e-6) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b) <= tol * max(1.0, abs(a))
    return a == b


@pytest.mark.parametrize("analysis", ANALYSES)
def test_a_sharded_run_equals_the_run_unsharded(analysis, tiny_pipe_dir, data, tmp_path) -> None:
    run = analyses.get(analysis).compute_function()
    direct = run(spec_of(analysis, tiny_pipe_dir, data, 1), tmp_path / "direct")
    sharded = run(spec_of(analysis, tiny_pipe_dir, data, 2), tmp_path / "sharded")
    a, b = RunDir(tmp_path / "direct"), RunDir(tmp_path / "sharded")
    ra, rb = a.read_results(), b.read_results()
    assert sorted(ra) == sorted(rb) and len(ra) >= 3
    for iid in ra:
        assert _close(_numbers(ra[iid]), _numbers(rb[iid])), iid
    assert _close({k: v for k, v in direct.items() if k not in PER_SESSION},
                  {k: v for k, v in sharded.items() if k not in PER_SESSION})
    assert sharded["shards"] == 2 and sharded["status"] == "finished" and b.status() == "finished"
    # after the session: one file, each item once; the shards' own files are logs only
    lines = [json.loads(ln) for ln in (b.path / "results.jsonl").read_text().splitlines()]
    assert sorted(r["item_id"] for r in lines) == sorted(ra)
    assert b.result_files() == [b.path / "results.jsonl"]
    shard_dirs = b.shard_dirs()
    assert [d.name for d in shard_dirs] == ["shard-0-of-2", "shard-1-of-2"]
    assert not any((d / "run.pid").exists() for d in shard_dirs)
    owners: dict[str, int] = {}
    for i, d in enumerate(shard_dirs):
        events = [json.loads(ln) for ln in (d / "events.jsonl").read_text().splitlines()]
        assert events[0]["type"] == "started" and events[0]["shard"] == [i, 2] and events[-1]["type"] == "finished"
        for ev in events:
            if ev["type"] in ("item_done", "item_error"):
                owners[ev["item_id"]] = i
    assert sorted(owners) == sorted(ra) and set(owners.values()) == {0, 1}  # both shards worked
    for rec in ra.values():  # a target's items are one shard's
        target = rec.get("target_id")
        if target:
            assert owners[rec["item_id"]] == owners[target], rec["item_id"]


def test_shard_records_are_newer_and_folding_is_idempotent(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.append_result({"item_id": "a", "status": "error", "error": "x"})
    rd.append_result({"item_id": "b", "status": "ok"})
    shard = RunDir(rd.path, shard=(1, 2))
    shard.append_result({"item_id": "a", "status": "ok"})
    assert (rd.path / "shards/shard-1-of-2/results.jsonl").is_file()
    assert rd.read_results()["a"]["status"] == "ok" and rd.done_ids() == {"a", "b"}
    assert rd.fold_shards() == 1 and rd.result_files() == [rd.path / "results.jsonl"]
    assert rd.fold_shards() == 0
    assert rd.read_results()["a"]["status"] == "ok"
    with pytest.raises(ValueError, match="0 <= i < K"):
        RunDir(rd.path, shard=(2, 2))


def test_a_live_shard_makes_the_run_running_and_refuses_another_session(tiny_pipe_dir, data, tmp_path) -> None:
    spec = spec_of("concept", tiny_pipe_dir, data, 2)
    rd = RunDir.create(tmp_path / "run", spec)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from memtui.engine.runs.store import RunDir; "
                               "RunDir(sys.argv[1], shard=(1, 2)).acquire_lock(); print('ok', flush=True); "
                               "time.sleep(60)", str(rd.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        assert rd.status() == "running" and rd.live_lock() is None
        with pytest.raises(RunLockedError, match="a shard of a sharded session"):
            rd.prepare(spec)
    finally:
        holder.kill()
        holder.wait()
    assert rd.status() != "running"
    assert rd.prepare(spec) == "resume"


def test_shards_are_validated() -> None:
    assert "shards must be a positive integer, got 0" in RunSpec(base="x", shards=0).problems()
    assert "shards must be at most 64, got 65" in RunSpec(base="x", shards=65).problems()
    assert not [p for p in RunSpec(base="x", shards=3).problems() if "shards" in p]
    assert "shards" not in RunSpec(base="x", shards=3).fingerprint()


# ------------------------------------------------------------------------------ processes
def _cmd(pipe: Path, data: dict[str, Path], out: Path, shards: int = 2) -> list[str]:
    return [sys.executable, "-m", "memtui", "--batch", "--base", str(pipe), "--erased", str(data["erased"]),
            "--reference", str(data["reference"]), "--method", "ddim", "--steps", "24", "--batch-size", "1",
            "--device", "cpu", "--shards", str(shards), "--out", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _wait(cond, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def _command(argv: list[str]) -> Iterator[subprocess.Popen]:
    """``argv`` as a child process (stderr piped as text); killed and reaped on the way out."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _shard_records(out: Path, i: int) -> int:
    path = out / f"shards/shard-{i}-of-2/results.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _once_and_equal(out: Path, direct: Path) -> None:
    lines = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    latest = RunDir(out).read_results()
    ref = RunDir(direct).read_results()
    assert sorted(latest) == sorted(ref) and all(r["status"] == "ok" for r in latest.values())
    assert len(lines) == len(latest), "an item was recorded twice"
    for iid, r in ref.items():
        assert abs(latest[iid]["psnr"] - r["psnr"]) < 1e-6 and abs(latest[iid]["nll"] - r["nll"]) < 1e-6


@pytest.fixture(scope="module")
def direct_run(tiny_pipe_dir, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("direct") / "run"
    subprocess.run(_cmd(tiny_pipe_dir, data, out, shards=1), check=True, env=_env(), capture_output=True)
    return out


def test_the_holder_killed_mid_run_leaves_its_shards_finishing_and_the_command_completes_it(
        tiny_pipe_dir, data, direct_run, tmp_path) -> None:
    out = tmp_path / "run"
    with _command(_cmd(tiny_pipe_dir, data, out)) as proc:
        _wait(lambda: proc.poll() is not None or _shard_records(out, 0) + _shard_records(out, 1) >= 1,
              "a shard's first record")
        assert proc.poll() is None, proc.stderr.read()
        proc.kill()
        proc.wait()
        rd = RunDir(out)
        assert rd.status() == "running"  # its shards still work
        _wait(lambda: not rd.live_shard_locks(), "the shards to finish")
        assert rd.status() == "incomplete" and rd.read_summary() is None
        assert len(rd.read_results()) == len(RunDir(direct_run).read_results())  # the shards finished their part
    again = subprocess.run(_cmd(tiny_pipe_dir, data, out), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert RunDir(out).status() == "finished" and RunDir(out).read_summary()["complete"] is True
    _once_and_equal(out, direct_run)


def test_a_shard_killed_fails_the_command_naming_its_log_and_resumes(tiny_pipe_dir, data, direct_run,
                                                                     tmp_path) -> None:
    out = tmp_path / "run"
    with _command(_cmd(tiny_pipe_dir, data, out)) as proc:
        _wait(lambda: proc.poll() is not None or _shard_records(out, 1) >= 1, "shard 1's first record")
        lock = RunDir(out, shard=(1, 2)).read_lock()
        assert lock is not None, proc.stderr.read() if proc.poll() is not None else "no lock"
        os.kill(lock["pid"], signal.SIGKILL)
        killed_at = _shard_records(out, 1)
        err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 1, err
    assert "shard 1 of 2 ended with exit status -9" in err and "shard-1-of-2/shard.log" in err
    total = len(RunDir(direct_run).read_results())
    assert killed_at < total // 2, "the shard finished before it was killed: make the work longer"
    assert RunDir(out).status() == "failed"
    assert len(RunDir(out).read_results()) < total
    again = subprocess.run(_cmd(tiny_pipe_dir, data, out), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    _once_and_equal(out, direct_run)


def test_sigint_stops_every_shard_resumable(tiny_pipe_dir, data, direct_run, tmp_path) -> None:
    out = tmp_path / "run"
    with _command(_cmd(tiny_pipe_dir, data, out)) as proc:
        _wait(lambda: proc.poll() is not None or _shard_records(out, 0) >= 1, "shard 0's first record")
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    rd = RunDir(out)
    summary = rd.read_summary()
    assert summary["status"] == "cancelled" and summary["complete"] is False and rd.status() == "cancelled"
    assert not rd.live_shard_locks() and rd.result_files() == [out / "results.jsonl"]
    for d in rd.shard_dirs():
        assert json.loads((d / "events.jsonl").read_text().splitlines()[-1])["type"] == "cancelled"
    again = subprocess.run(_cmd(tiny_pipe_dir, data, out), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    _once_and_equal(out, direct_run)
