"""The executor protocol: run a list of cell tasks, report each start and end."""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from memtui.engine.runs.sweep import CellTask

__all__ = ["Executor", "OnStart", "OnEnd"]

OnStart = Callable[["CellTask", Mapping[str, Any], int], None]  # (task, worker description, pid)
OnEnd = Callable[["CellTask", "int | None"], None]  # (task, exit code: 0 ok, >0 memtui's code, <0 signal)


class Executor:
    """Runs cells. ``workers``: how many at once (None: the executor's default).
    :meth:`run` blocks until every task has ended or ``cancel`` is set and the started ones have
    stopped; a failing task never stops the others. Each task is a ``memtui --batch`` command whose
    run directory resumes on its own, so an executor only has to start, stop and report."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers

    def describe(self) -> list[dict[str, Any]]:
        """The workers as recorded in sweep.json (id, and what pins them)."""
        return []

    def run(self, tasks: list["CellTask"], on_start: OnStart, on_end: OnEnd, cancel: threading.Event) -> None:
        raise NotImplementedError
