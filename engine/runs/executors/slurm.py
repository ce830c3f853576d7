"""The ``slurm`` executor: every cell is one task of a Slurm job array, submitted through submitit.

Each array task runs the cell's ordinary ``memtui --batch`` command (a :class:`CellJob`); its output
goes to the cell's log, submitit's own files to ``SWEEP_DIR/.slurm/``. ``workers`` caps how many
tasks run at once (``slurm_array_parallelism``); the sweep file's ``[slurm]`` table sets the rest
(see :data:`SlurmExecutor.OPTIONS`).

- **Preemption and time limits.** submitit asks Slurm for SIGUSR2 ``signal_delay_s`` before the
  end; :meth:`CellJob.checkpoint` then stops the cell (SIGTERM: it finishes its current batch and
  leaves the run resumable) and submitit requeues the task, which resumes the run directory.
- **scancel** of a task (or the sweep's cancel) sends the cell SIGTERM: it stops after its current
  batch, resumable; the cell is recorded ``cancelled`` and the next ``--sweep`` resumes it.
- States come from ``squeue`` (clusters without accounting have no ``sacct``); a task's exit code
  from the result submitit writes.

submitit is imported only when the executor runs (``pip install 'memtui[slurm]'``).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from memtui.engine.runs.executors import register
from memtui.engine.runs.executors.base import EXIT_INTERRUPTED, Executor, OnEnd, OnQueued, OnStart

if TYPE_CHECKING:
    from memtui.engine.runs.sweep import CellTask

__all__ = ["SlurmExecutor", "CellJob", "squeue_states"]

POLL_S = 1.0
STOP_GRACE_S = 60.0  # how long checkpoint() waits for the cell to stop after SIGTERM
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "SPECIAL_EXIT", "REVOKED"}


class CellJob:
    """What one array task runs: the cell's command, output appended to its log. Returns the
    command's exit code (a signal's as its negative). ``checkpoint`` (called by submitit on
    preemption or the time limit) stops the cell gracefully before submitit requeues the task."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def __call__(self, command: list[str], log: str) -> int:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"memtui: slurm job {os.environ.get('SLURM_JOB_ID', '?')} on {os.uname().nodename}\n"
                      .encode())
            out.flush()
            # Slurm's --signal=USR2 goes to every process of the job step: the cell ignores it and is
            # stopped by checkpoint()'s SIGTERM instead (one signal: a graceful stop, not an abort)
            self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          close_fds=True, preexec_fn=_ignore_usr2)
            # poll, never a blocking wait(): submitit's SIGUSR2 handler (checkpoint) runs in this
            # thread, and Popen.wait() would hold the lock that the handler's wait needs
            while (code := self._proc.poll()) is None:
                time.sleep(0.2)
            return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Stop the cell (SIGTERM; SIGKILL after STOP_GRACE_S) and resubmit the same call."""
        from submitit.helpers import DelayedSubmission

        if self._proc is not None:
            _stop(self._proc.pid, STOP_GRACE_S)
        return DelayedSubmission(CellJob(), *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self._proc = None


def _ignore_usr2() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _stop(pid: int, grace_s: float) -> None:
    """SIGTERM ``pid`` (a child of this process) and reap it, SIGKILL after ``grace_s``. Uses
    os.waitpid directly: it may run in a signal handler that interrupted a Popen call."""
    def reaped() -> bool:
        try:
            return os.waitpid(pid, os.WNOHANG)[0] == pid
        except ChildProcessError:  # already reaped
            return True

    if reaped():
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if reaped():
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def squeue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{job id: (state, node list)}`` from ``squeue`` for the given ids (array tasks one per line
    as ``<array>_<index>``, pending ones included; ended jobs stay listed for the cluster's
    ``MinJobAge``). {} when squeue fails."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%N", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states: dict[str, tuple[str, str]] = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1], parts[2])
    return states


@register
class SlurmExecutor(Executor):
    name = "slurm"
    summary = "A Slurm job array through submitit (one task per cell; requeued on preemption or time limit)"
    OPTIONS: ClassVar[dict[str, tuple[type | tuple[type, ...], str]]] = {
        "partition": (str, "Slurm partition (default: the cluster's default)"),
        "timeout_min": (int, "time limit of each task, minutes (default 4320 = 3 days)"),
        "cpus_per_task": (int, "CPUs per task"),
        "gpus_per_node": (int, "GPUs per task (one cell per task)"),
        "mem_gb": ((int, float), "memory per task, GB"),
        "signal_delay_s": (int, "seconds before the time limit at which the cell is stopped and requeued (default 90)"),
        "max_requeues": (int, "how many times a timed-out task is requeued (default 3)"),
        "job_name": (str, "the array's job name (default memtui)"),
        "additional": (dict, "further sbatch options, e.g. `{ account = \"lab\", qos = \"high\" }`"),
        "setup": (list, "shell lines run before each task, e.g. `[\"module load cuda/12.4\"]`"),
    }

    def describe(self) -> list[dict[str, Any]]:
        return [{"id": "slurm", "array_parallelism": self.workers, **self.options}]

    def _executor(self, folder: Path, n: int) -> Any:
        try:
            import submitit
        except ImportError:
            raise RuntimeError("the slurm executor needs submitit: pip install 'memtui[slurm]'") from None
        if shutil.which("sbatch") is None:
            raise RuntimeError("the slurm executor needs Slurm's sbatch on PATH (this host has none)")
        o = self.options
        ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm",
                                   slurm_max_num_timeout=int(o.get("max_requeues", 3)))
        params: dict[str, Any] = {"timeout_min": int(o.get("timeout_min", 4320)),
                                  "slurm_array_parallelism": self.workers or n,
                                  "name": o.get("job_name", "memtui"),
                                  "slurm_signal_delay_s": int(o.get("signal_delay_s", 90))}
        for key, param in (("partition", "slurm_partition"), ("cpus_per_task", "cpus_per_task"),
                           ("gpus_per_node", "gpus_per_node"), ("mem_gb", "mem_gb"),
                           ("additional", "slurm_additional_parameters"), ("setup", "slurm_setup")):
            if key in o:
                params[param] = o[key]
        ex.update_parameters(**params)
        return ex

    def run(self, tasks: list["CellTask"], on_start: OnStart, on_end: OnEnd, cancel: threading.Event,
            on_queued: OnQueued | None = None) -> None:
        if not tasks:
            return
        import submitit

        folder = tasks[0].log.parent.parent / ".slurm"
        ex = self._executor(folder, len(tasks))
        # tasks an earlier sweep command left queued or running on the cluster are followed, not
        # submitted again (a second writer would only find the cell's run directory locked)
        previous = squeue_states([t.previous_job for t in tasks if t.previous_job])
        follow = {t.name: t.previous_job for t in tasks
                  if t.previous_job and previous.get(t.previous_job, ("", ""))[0] not in ("", *ENDED)}
        new = [t for t in tasks if t.name not in follow]
        jobs: list[tuple["CellTask", Any, bool]] = [
            (t, submitit.SlurmJob(folder=folder / "%j", job_id=follow[t.name]), True) for t in tasks if t.name in follow]
        if new:
            with ex.batch():
                submitted = [ex.submit(CellJob(), t.command, str(t.log)) for t in new]
            jobs += [(t, job, False) for t, job in zip(new, submitted)]
        live: dict[str, tuple["CellTask", Any]] = {}
        for t, job, followed in jobs:
            live[job.job_id] = (t, job)
            if on_queued is not None:
                on_queued(t, {"id": job.job_id, "job_id": job.job_id, "followed": followed})
        started: set[str] = set()
        last: dict[str, str] = {}
        gone_since: dict[str, float] = {}
        cancelled = False
        while live:
            if cancel.is_set() and not cancelled:
                cancelled = True
                for _t, job in live.values():
                    job.cancel(check=False)
            states = squeue_states(list(live))
            for jid in list(live):
                t, job = live[jid]
                state, node = states.get(jid, ("", ""))
                if state:
                    last[jid] = state
                    gone_since.pop(jid, None)
                if state in ("RUNNING", "COMPLETING") and jid not in started:
                    started.add(jid)
                    on_start(t, {"id": jid, "job_id": jid, "host": node}, None)
                code = self._outcome(job, state or last.get(jid, ""), jid in states or not states, jid in last,
                                     gone_since, jid)
                if code is None:
                    continue
                if jid not in started:  # ended between two polls
                    on_start(t, {"id": jid, "job_id": jid, "host": node}, None)
                del live[jid]
                on_end(t, code)
            if live:
                time.sleep(POLL_S)

    @staticmethod
    def _outcome(job: Any, state: str, listed: bool, seen: bool, gone_since: dict[str, float], jid: str) -> int | None:
        """The task's exit code once it has ended, else None. A result file wins; a task that
        ended without one (cancelled, killed, node failure) gets 130 when cancelled, else -9.
        ``listed``: squeue answered for it (or squeue failed: no news); ``seen``: it was listed once."""
        from submitit.core.utils import FailedJobError, UncompletedJobError

        if job.paths.result_pickle.exists():
            try:
                return int(job.result())
            except FailedJobError:
                return 1
            except UncompletedJobError:  # "not requeued because ...": the run stopped resumable
                return EXIT_INTERRUPTED
        if state and state not in ENDED:  # pending, running, requeued, suspended, ...
            return None
        if state in ENDED or not listed:
            first = gone_since.setdefault(jid, time.monotonic())
            # the result file may still be on its way; a task never listed yet may not be known yet
            if time.monotonic() - first < (5.0 if seen else 60.0):
                return None
            return EXIT_INTERRUPTED if state in ("CANCELLED", "PREEMPTED", "TIMEOUT", "DEADLINE") else -9
        return None
