"""The analysis registry: declarations register themselves with :func:`register`; the modules of
``memtui.engine.analyses`` are found with ``pkgutil``. Torch-free."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from memtui.engine.core.registry import Registry

if TYPE_CHECKING:
    from memtui.engine.analyses.base import Analysis

__all__ = ["register", "unregister", "get", "names", "all_analyses", "main_names", "get_analysis"]

ORDER = ("concept", "memories", "scramble", "generate", "prompt_test")  # display order of the shipped ones
ANALYSES: Registry[Analysis] = Registry("analysis", "memtui.engine.analyses", ORDER, skip=("base", "registry"))
register = ANALYSES.register
unregister = ANALYSES.unregister


def all_analyses() -> list[type[Analysis]]:
    """Every declared analysis: the shipped ones in :data:`ORDER`, then others by name."""
    return ANALYSES.classes()


def names() -> tuple[str, ...]:
    """Names of every analysis (``spec.analysis`` values)."""
    return tuple(a.name for a in all_analyses())


def main_names() -> tuple[str, ...]:
    """Names of the analyses a run can be started with in the console (follow-ups excluded)."""
    return tuple(a.name for a in all_analyses() if not a.follow_up)


def get(name: str) -> type[Analysis]:
    """The declaration of analysis ``name``; ValueError naming the known analyses otherwise."""
    return ANALYSES.get(name)


def get_analysis(name: str) -> Callable[..., dict[str, Any]]:
    """The run function of analysis ``name`` (``fn(spec, run_dir, progress=None, cancel=None)``)."""
    return get(name).compute_function()
