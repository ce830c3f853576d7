"""The analysis registry: declarations register themselves with :func:`register`; the modules of
``memtui.engine.analyses`` are found with ``pkgutil``. Torch-free."""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memtui.engine.analyses.base import Analysis

__all__ = ["register", "unregister", "get", "names", "all_analyses", "main_names", "get_analysis"]

_REGISTRY: dict[str, type["Analysis"]] = {}
_discovered = False
ORDER = ("concept", "memories", "scramble", "generate", "prompt_test")  # display order of the shipped ones


def register(cls: type["Analysis"]) -> type["Analysis"]:
    """Class decorator: add an analysis declaration to the registry (names are unique)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} declares no name")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"analysis {cls.name!r} is declared twice ({other.__module__}, {cls.__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove analysis ``name`` from the registry (tests register dummies and take them out)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in ("base", "registry") and not info.name.startswith("_"):
            importlib.import_module(f"memtui.engine.analyses.{info.name}")


def all_analyses() -> list[type[Analysis]]:
    """Every declared analysis: the shipped ones in :data:`ORDER`, then others by name."""
    _discover()
    rank = {n: i for i, n in enumerate(ORDER)}
    return sorted(_REGISTRY.values(), key=lambda a: (rank.get(a.name, len(ORDER)), a.name))


def names() -> tuple[str, ...]:
    """Names of every analysis (``spec.analysis`` values)."""
    return tuple(a.name for a in all_analyses())


def main_names() -> tuple[str, ...]:
    """Names of the analyses a run can be started with in the console (follow-ups excluded)."""
    return tuple(a.name for a in all_analyses() if not a.follow_up)


def get(name: str) -> type[Analysis]:
    """The declaration of analysis ``name``; ValueError naming the known analyses otherwise."""
    all_analyses()
    if name not in _REGISTRY:
        raise ValueError(f"unknown analysis {name!r}; known: {', '.join(names())}")
    return _REGISTRY[name]


def get_analysis(name: str) -> Callable[..., dict[str, Any]]:
    """The run function of analysis ``name`` (``fn(spec, run_dir, progress=None, cancel=None)``)."""
    return get(name).compute_function()
