"""The executor protocol: run a list of cell tasks, report each start and end."""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from memtui.engine.runs.sweep import CellTask

__all__ = ["Executor", "OnStart", "OnEnd", "OnQueued", "EXIT_INTERRUPTED"]

EXIT_INTERRUPTED = 130  # a cell's ``memtui --batch`` stopped by a signal, resumable (memtui.exit_codes)

OnStart = Callable[["CellTask", Mapping[str, Any], "int | None"], None]  # (task, worker description, pid here or None)
OnQueued = Callable[["CellTask", Mapping[str, Any]], None]  # (task, its job: id, job_id) once submitted
OnEnd = Callable[["CellTask", "int | None"], None]  # (task, exit code: 0 ok, >0 memtui's code, <0 signal)


class Executor:
    """Runs cells. ``workers``: how many at once (None: the executor's default).
    :meth:`run` blocks until every task has ended or ``cancel`` is set and the started ones have
    stopped; a failing task never stops the others. Each task is a ``memtui --batch`` command whose
    run directory resumes on its own, so an executor only has to start, stop and report."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: the options of the sweep file's ``[<name>]`` table: key -> (type or types, help)
    OPTIONS: ClassVar[dict[str, tuple[type | tuple[type, ...], str]]] = {}

    def __init__(self, workers: int | None = None, options: Mapping[str, Any] | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        probs = self.option_problems(options or {})
        if probs:
            raise ValueError("; ".join(msg for _key, msg in probs))
        self.workers = workers
        self.options: dict[str, Any] = dict(options or {})

    @classmethod
    def option_problems(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        """What is wrong with ``options`` (unknown keys, wrong types): (key, message) each."""
        probs = []
        for k, v in options.items():
            if k not in cls.OPTIONS:
                known = ", ".join(cls.OPTIONS) or "none"
                probs.append((k, f"[{cls.name}] unknown option {k!r}; known: {known}"))
                continue
            types = cls.OPTIONS[k][0]
            if isinstance(v, bool) or not isinstance(v, types):
                want = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
                probs.append((k, f"[{cls.name}] {k} must be {want}, got {v!r}"))
        return probs

    def describe(self) -> list[dict[str, Any]]:
        """The workers as recorded in sweep.json (id, and what pins them)."""
        return []

    def run(self, tasks: list["CellTask"], on_start: OnStart, on_end: OnEnd, cancel: threading.Event,
            on_queued: OnQueued | None = None) -> None:
        raise NotImplementedError
