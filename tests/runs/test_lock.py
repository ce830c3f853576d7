"""The run lock (``run.pid``): zombies are not holders, acquisition is atomic across processes, the
console reaps the runs it spawns, and ``memtui --batch`` handles SIGHUP and an early Ctrl-C."""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from memtui import jobs
from memtui.engine.runs.store import RunDir, RunLockedError, pid_alive

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

# a process that takes the run lock and dies without releasing it (like a kill -9 / OOM kill)
DIE_HOLDING = ("import os, sys; from memtui.engine.runs.store import RunDir; "
               "RunDir(sys.argv[1]).acquire_lock(); os.kill(os.getpid(), 9)")


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _wait_zombie(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _state(pid) != "Z":
        assert time.monotonic() < deadline, f"process {pid} did not exit"
        time.sleep(0.01)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------ 1. zombies
def test_a_zombie_holder_is_not_alive_and_its_run_resumes_at_once(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", DIE_HOLDING, str(run)], env=_env())  # not reaped
    try:
        _wait_zombie(proc.pid)
        lock = RunDir(run).read_lock()
        assert lock and lock["pid"] == proc.pid  # its lock is left behind
        assert not pid_alive(proc.pid) and not pid_alive(proc.pid, lock["proc_start"])
        rd = RunDir(run)
        assert rd.live_lock() is None and rd.status() != "running"
        rd.acquire_lock()  # the resume is not refused while the dead holder is still a zombie
        assert rd.read_lock()["pid"] == os.getpid()
        rd.release_lock()
        assert not (run / "run.pid").exists()
    finally:
        proc.wait(timeout=30)


def test_pid_alive_keeps_the_start_time_check() -> None:
    assert pid_alive(os.getpid())
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    assert pid_alive(os.getpid(), ticks) and not pid_alive(os.getpid(), ticks + 1)
    assert not pid_alive(0) and not pid_alive(-3)


def test_the_console_reaps_a_run_it_spawned_that_died_holding_its_lock(tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    monkeypatch.setattr(jobs, "batch_command", lambda spec, run_dir, extra=(): [sys.executable, "-c", DIE_HOLDING, str(run_dir)])
    proc = jobs.spawn_run(tmp_path / "spec.toml", run)
    try:
        deadline = time.monotonic() + 30
        while proc.returncode is None and _state(proc.pid) not in ("Z", None):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert RunDir(run).read_lock()["pid"] == proc.pid
        assert not jobs.is_live(run) and jobs.run_status(run) != "running"
        assert proc.returncode == -signal.SIGKILL  # reaped by the console, its exit status kept
        assert _state(proc.pid) is None  # no zombie is left
        assert jobs.run_pid(run) is None and not jobs.pid_alive(proc.pid)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait(timeout=30)


def test_jobs_pid_alive_does_not_steal_a_foreign_childs_exit_status() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(7)"])
    _wait_zombie(proc.pid)
    assert not jobs.pid_alive(proc.pid)
    assert proc.wait(timeout=30) == 7


# ------------------------------------------------------------------------------ 2. atomic lock
CONTENDER = textwrap.dedent("""
    import sys, time
    from memtui.engine.runs.store import RunDir, RunLockedError
    run, start_at = sys.argv[1], float(sys.argv[2])
    while time.time() < start_at:
        pass
    rd = RunDir(run)
    try:
        rd.acquire_lock()
    except RunLockedError:
        print("locked", flush=True)
        sys.exit(3)
    print("won", flush=True)
    time.sleep(0.5)
    rd.release_lock()
""")


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale-lock"])
def test_processes_started_together_get_the_lock_once(tmp_path: Path, stale: bool) -> None:
    for trial in range(3):
        run = tmp_path / f"run{trial}"
        run.mkdir()
        if stale:  # left by a dead process: taken over by exactly one contender
            dead = subprocess.Popen([sys.executable, "-c", ""])
            dead.wait()
            (run / "run.pid").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                     "started": "x", "proc_start": None}))
        start_at = time.time() + 1.5
        procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(run), str(start_at)],
                                  stdout=subprocess.PIPE, text=True, env=_env()) for _ in range(5)]
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert sorted(outs) == ["locked"] * 4 + ["won"], (trial, outs)
        assert not (run / "run.pid").exists()
        assert [p.name for p in run.iterdir()] == []  # no temp or stale-lock file left behind


def test_acquire_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = RunDir(rd.path)
        rd.path.mkdir()
        (rd.path / "run.pid").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                     "started": "t"}))
        with pytest.raises(RunLockedError, match=f"being run by process {holder.pid}"):
            other.acquire_lock()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    rd.acquire_lock()
    assert rd.read_lock()["pid"] == os.getpid()
    rd.acquire_lock()  # re-taking one's own lock is fine
    rd.release_lock()
    assert not (rd.path / "run.pid").exists()


def test_a_lock_being_written_is_not_taken_over(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    (rd.path / "run.pid").write_text("")  # another process created it with O_EXCL, writing it now
    with pytest.raises(RunLockedError, match="being started"):
        rd.acquire_lock()
    old = time.time() - 60
    os.utime(rd.path / "run.pid", (old, old))  # an empty lock from long ago is stale
    rd.acquire_lock()
    rd.release_lock()


# ------------------------------------------------------------------------------ memtui --batch
def _batch_cmd(tiny_pipe_dir: Path, data: tuple[Path, Path], out: Path, steps: int, items: int) -> list[str]:
    return [sys.executable, "-m", "memtui", "--batch", "--base", str(tiny_pipe_dir), "--erased", str(data[0]),
            "--reference", str(data[1]), "--method", "ddim", "--steps", str(steps), "--batch-size", "1",
            "--max-items", str(items), "--device", "cpu", "--out", str(out)]


# runs ``memtui --batch`` (cli.main, the console script's entry) once per trial, each start
# synchronised with the other process' by the parent (the libraries are imported beforehand)
RACER = textwrap.dedent("""
    import contextlib, io, json, sys, time
    from pathlib import Path
    import memtui.engine.compute.run  # noqa: F401 - the slow imports, before the start line
    from memtui.cli import main
    root, trials, argv = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    me = str(__import__("os").getpid())
    for t in range(trials):
        (root / f"ready{t}.{me}").write_text("")
        while not (root / f"go{t}").exists():
            time.sleep(0.005)
        start_at = float((root / f"go{t}").read_text())
        while time.time() < start_at:
            pass
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([*argv, "--out", str(root / f"run{t}")])
        (root / f"result{t}.{me}").write_text(json.dumps([code, err.getvalue()]))
""")


def test_two_batch_runs_started_together_on_one_out_only_one_runs(tiny_pipe_dir, concept_data, tmp_path) -> None:
    trials = 3
    argv = _batch_cmd(tiny_pipe_dir, concept_data, tmp_path / "unused", steps=2, items=1)[3:-2]
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(trials), *argv], env=_env())
             for _ in range(2)]
    try:
        for t in range(trials):
            deadline = time.monotonic() + 120
            while len(list(tmp_path.glob(f"ready{t}.*"))) < 2:
                assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
                time.sleep(0.01)
            (tmp_path / f"go{t}").write_text(str(time.time() + 0.3))
        for p in procs:
            assert p.wait(timeout=120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    overlapped = 0
    for t in range(trials):
        results = [json.loads(f.read_text()) for f in sorted(tmp_path.glob(f"result{t}.*"))]
        codes = sorted(code for code, _ in results)
        overlapped += codes == [0, 3]
        out = tmp_path / f"run{t}"
        types = [e["type"] for e in RunDir(out).read_events()]
        assert not (out / "run.pid").exists()
        if codes == [0, 0]:
            # on a loaded machine the second process may start only after the first has finished:
            # then it resumes a finished run and computes nothing (never two writers at once)
            i = types.index("resumed")
            assert types.count("started") == 1 and "finished" in types[:i] and "item_done" not in types[i:], types
            continue
        assert codes == [0, 3], (t, results)
        loser = next(err for code, err in results if code == 3)
        assert "is being run by process" in loser and "wait for it or cancel it first" in loser
        assert types.count("finished") == 1 and types.count("started") == 1 and "resumed" not in types, types
    assert overlapped >= 1  # the lock was contended at least once (not every trial ran one after the other)


def test_sighup_stops_the_run_resumable_without_a_stale_lock(tiny_pipe_dir, concept_data, tmp_path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(_batch_cmd(tiny_pipe_dir, concept_data, out, steps=5, items=2), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=_env())
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and not (out / "run.pid").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGHUP)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "resume with the same command" in err and "Traceback" not in err
    rd = RunDir(out)
    assert not (out / "run.pid").exists() and rd.status() == "cancelled"


def test_ctrl_c_before_the_run_starts_exits_130_quietly(tmp_path, monkeypatch, capsys) -> None:
    import memtui.batch as batch

    def interrupted(args: argparse.Namespace):
        raise KeyboardInterrupt  # Ctrl-C while the libraries are still loading

    monkeypatch.setattr(batch, "spec_from_args", interrupted)
    args = argparse.Namespace(report=None, out=str(tmp_path / "run"), restart=False, json=False)
    assert batch.run_batch(args) == 130
    err = capsys.readouterr().err
    assert "resume with the same command" in err and str(tmp_path / "run") in err and "Traceback" not in err
