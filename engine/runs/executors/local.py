"""The ``local`` executor: a pool of worker processes on this host, one cell at a time each.

``workers`` defaults to one per visible CUDA GPU (each worker's cells run with
``CUDA_VISIBLE_DEVICES=<i>``), else 1 on the CPU. Each cell is a ``memtui --batch`` subprocess in
its own session (a crash is isolated; the run directory's lock keeps one writer); its output goes to
the task's log. When ``cancel`` is set every running cell gets one SIGINT (it stops after its
current batch, resumable) and no further cell starts.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from memtui.engine.runs.executors import register
from memtui.engine.runs.executors.base import Executor, OnEnd, OnQueued, OnStart

if TYPE_CHECKING:
    from memtui.engine.runs.sweep import CellTask

__all__ = ["LocalExecutor", "visible_gpus"]

POLL_S = 0.2


def visible_gpus() -> list[str]:
    """The CUDA devices torch sees, as ``CUDA_VISIBLE_DEVICES`` values ([] without CUDA or torch)."""
    try:
        import torch
    except ImportError:
        return []
    try:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver means: no GPU
        n = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(n)]
    return ids[:n]


@register
class LocalExecutor(Executor):
    name = "local"
    summary = "Worker processes on this host (one per visible CUDA GPU, else one on the CPU)"

    def __init__(self, workers: int | None = None, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(workers, options)
        gpus = visible_gpus() if workers is None or workers > 1 else []
        self.slots: list[dict[str, Any]] = []
        n = workers if workers is not None else max(1, len(gpus))
        for i in range(n):
            slot: dict[str, Any] = {"id": i, "host": os.uname().nodename}
            if gpus:
                slot["env"] = {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}
            self.slots.append(slot)

    def describe(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self.slots]

    def run(self, tasks: list["CellTask"], on_start: OnStart, on_end: OnEnd, cancel: threading.Event,
            on_queued: OnQueued | None = None) -> None:
        todo: queue.Queue[CellTask] = queue.Queue()
        for t in tasks:
            todo.put(t)
        threads = [threading.Thread(target=self._worker, args=(slot, todo, on_start, on_end, cancel),
                                    name=f"sweep-worker-{slot['id']}", daemon=True) for slot in self.slots]
        for th in threads:
            th.start()
        for th in threads:
            while th.is_alive():  # short joins: the main thread keeps handling signals
                th.join(POLL_S)

    def _worker(self, slot: Mapping[str, Any], todo: "queue.Queue[CellTask]", on_start: OnStart, on_end: OnEnd,
                cancel: threading.Event) -> None:
        env = {**os.environ, **slot.get("env", {})}
        while not cancel.is_set():
            try:
                task = todo.get_nowait()
            except queue.Empty:
                return
            code: int | None = None
            try:
                task.log.parent.mkdir(parents=True, exist_ok=True)
                with open(task.log, "ab") as log:
                    proc = subprocess.Popen(task.command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                            close_fds=True)
                on_start(task, slot, proc.pid)
                code = _wait(proc, cancel)
            except OSError as e:
                with open(task.log, "a", encoding="utf-8") as log:
                    log.write(f"memtui: cannot start the cell: {e}\n")
                code = 1
            finally:
                on_end(task, code)


def _wait(proc: subprocess.Popen, cancel: threading.Event) -> int:
    """Wait for ``proc``; on ``cancel`` send it (its process group) one SIGINT and wait on."""
    signalled = False
    while True:
        try:
            return proc.wait(POLL_S)
        except subprocess.TimeoutExpired:
            pass
        if cancel.is_set() and not signalled:
            signalled = True
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass
