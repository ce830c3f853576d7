"""jobs (spawn/attach/cancel, tailing) and config (TOML round trip, one-launch overrides)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from memtui import jobs
from memtui.config import Config, apply_overrides, load_config, save_config


def test_jsonl_tail_reads_only_complete_new_lines(tmp_path):
    path = tmp_path / "results.jsonl"
    tail = jobs.JsonlTail(path)
    assert tail.read_new() == []
    path.write_text('{"item_id": "a"}\n{"item_id": "b", "ps')
    assert tail.read_new() == [{"item_id": "a"}]
    assert tail.read_new() == []
    with open(path, "a") as f:
        f.write('nr": 1.5}\nnot json\n[1]\n')
    assert tail.read_new() == [{"item_id": "b", "psnr": 1.5}]


def test_results_tail_follows_the_run_file_and_each_shard_file(tmp_path):
    from memtui.engine.runs.store import RunDir

    rd = RunDir(tmp_path)
    rd.append_result({"item_id": "a", "status": "error"})
    tail = jobs.ResultsTail(tmp_path)
    assert [r["item_id"] for r in tail.read_new()] == ["a"]
    RunDir(tmp_path, shard=(0, 2)).append_result({"item_id": "a", "status": "ok"})
    RunDir(tmp_path, shard=(1, 2)).append_result({"item_id": "b", "status": "ok"})
    new = tail.read_new()  # shard files appear mid-session: both are followed
    assert [(r["item_id"], r["status"]) for r in new] == [("a", "ok"), ("b", "ok")]
    assert tail.read_new() == []
    rd.fold_shards()  # the session ends: the same records come again from the run file
    assert sorted(r["item_id"] for r in tail.read_new()) == ["a", "b"]
    assert rd.read_results()["a"]["status"] == "ok"


def test_spawned_process_is_seen_live_and_cancelled_by_group(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    # a stand-in "run": a process in its own session with a child, like the batch runner's workers
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            " time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    (run / jobs.PID_FILE).write_text(str(proc.pid))
    try:
        assert jobs.is_live(run) and jobs.run_status(run) == "running"
        assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
        assert jobs.cancel_run(run, signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the whole group got the signal: no member is left
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)
        assert not jobs.is_live(run) and not jobs.cancel_run(run)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_batch_command_is_the_headless_entry(tmp_path):
    cmd = jobs.batch_command(tmp_path / "s.toml", tmp_path / "run")
    assert cmd[:5] == [sys.executable, "-m", "memtui", "--batch", "--spec"]
    assert cmd[5:] == [str(tmp_path / "s.toml"), "--out", str(tmp_path / "run")]


def test_read_run_from_runstore_files(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "spec.json").write_text(json.dumps({"analysis": "concept", "method": "nti"}))
    (run / "events.jsonl").write_text(json.dumps({"ts": "t", "type": "started", "total": 5}) + "\n")
    (run / "results.jsonl").write_text("".join(json.dumps({"item_id": f"e{i}", "status": s}) + "\n"
                                               for i, s in enumerate(["ok", "error", "ok"])))
    info = jobs.read_run(run)
    assert (info.status, info.done, info.total, info.errors) == ("incomplete", 3, 5, 1)
    assert info.method == "nti" and info.progress_text() == "3/5" and info.headline() == "-"


@pytest.mark.parametrize("analysis, summary, expected", [
    ("concept", {"sets": {"erased": {"psnr": {"mean": 26.814}}}, "relative_distance": 1.114},
     "PSNR 26.81 dB  RD 1.11"),
    ("memories", {"sets": {"target": {"psnr": {"mean": 27.5}}},
                  "average": {"memory_psnr": {"mean": 25.258}, "cv": {"mean": 0.2109}, "cv_pairwise": {"mean": 0.35}}},
     "mem. PSNR 25.26 dB  CV 0.211"),
    ("scramble", {"sets": {"target": {"psnr": {"mean": 27.8}}}, "nll_increase": {"mean": 32.37}},
     "NLL +32.4 scrambled"),
])
def test_headline_follows_the_analysis(tmp_path, analysis, summary, expected):
    run = tmp_path / "r"
    run.mkdir()
    (run / "spec.json").write_text(json.dumps({"analysis": analysis, "method": "ddim"}))
    (run / "summary.json").write_text(json.dumps(summary))
    assert jobs.read_run(run).headline() == expected


def test_config_round_trip_and_overrides(tmp_path):
    path = tmp_path / "c" / "config.toml"
    assert load_config(path) == Config()
    cfg = Config(checkpoint_roots=["/ck"], dataset_roots=["/d1", "/d2"], runs_dir="/runs", theme="nord")
    save_config(cfg, path)
    assert load_config(path) == cfg
    over = apply_overrides(load_config(path), runs=str(tmp_path / "other"))
    assert over.runs_path == tmp_path / "other" and load_config(path).runs_dir == "/runs"
    path.write_text("checkpoint_roots = 3\n")
    with pytest.raises(ValueError, match="checkpoint_roots"):
        load_config(path)
    path.write_text("not = [toml\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(path)


def test_gpu_line_without_nvml_says_no_gpu():
    pytest.importorskip("textual")
    try:
        import pynvml  # noqa: F401
        pytest.skip("nvidia-ml-py installed")
    except ImportError:
        pass
    from memtui.widgets.gpu_line import gpu_summary

    assert gpu_summary() == "no GPU"


def test_console_starts_without_torch():
    """The console's startup imports neither torch nor diffusers (engine modules load in workers)."""
    code = "import sys, memtui.app; print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_results_tail_starts_again_when_a_restart_replaces_the_file(tmp_path):
    import os

    from memtui.engine.runs.store import RunDir

    rd = RunDir(tmp_path)
    for i in "abc":
        rd.append_result({"item_id": i, "status": "ok"})
    tail = jobs.ResultsTail(tmp_path)
    assert [r["item_id"] for r in tail.read_new()] == ["a", "b", "c"] and not tail.take_reset()
    (tmp_path / ".old-1").mkdir()
    os.replace(tmp_path / "results.jsonl", tmp_path / ".old-1" / "results.jsonl")  # what --restart does
    rd.append_result({"item_id": "z", "status": "ok"})  # shorter than the old offset, another inode
    assert [r["item_id"] for r in tail.read_new()] == ["z"]
    assert tail.take_reset() and not tail.take_reset()
    rd.append_result({"item_id": "y", "status": "ok"})
    assert [r["item_id"] for r in tail.read_new()] == ["y"] and not tail.take_reset()
