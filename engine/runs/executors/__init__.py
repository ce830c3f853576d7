"""Sweep executors: how a sweep's cells are run. One module per executor registers an
:class:`~memtui.engine.runs.executors.base.Executor` subclass with :func:`register`; the registry
finds the modules with ``pkgutil``: ``local`` (worker processes on this host) and ``slurm`` (a job
array through submitit). An executor declares its sweep-file options in ``OPTIONS``. Torch-free."""
from __future__ import annotations

from memtui.engine.core.registry import Registry
from memtui.engine.runs.executors.base import Executor

__all__ = ["Executor", "register", "get_executor", "executor_names", "DEFAULT_EXECUTOR"]

DEFAULT_EXECUTOR = "local"
REGISTRY: Registry[Executor] = Registry("executor", __name__, order=("local", "slurm"), skip=("base",))
register = REGISTRY.register


def get_executor(name: str) -> type[Executor]:
    """The executor class registered as ``name`` (ValueError naming the known ones otherwise)."""
    return REGISTRY.get(name)


def executor_names() -> tuple[str, ...]:
    return REGISTRY.names()
