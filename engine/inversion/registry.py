"""The inversion-method registry. Every module of :mod:`memtui.engine.inversion.methods` declares
one method (an :class:`~memtui.engine.inversion.base.InversionMethod` decorated with
:func:`register`); the modules are found with ``pkgutil``, so adding a method is adding one module
there. Torch-free: listing methods and validating their options never imports torch.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from memtui.engine.inversion.base import InversionMethod

__all__ = ["register", "method_names", "get_method", "options_class", "DEFAULT_METHOD", "ORDER"]

ORDER = ("ddim", "renoise", "nti")  # the shipped methods, in display order; others follow by name
DEFAULT_METHOD = "renoise"           # the official code's default
_REGISTRY: dict[str, type[InversionMethod]] = {}
_discovered = False


def register(cls: type[InversionMethod]) -> type[InversionMethod]:
    """Class decorator: add an inversion method to the registry (names are unique)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} declares no name")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"inversion method {cls.name!r} is declared twice ({other.__module__}, {cls.__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    from memtui.engine.inversion import methods

    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{methods.__name__}.{info.name}")
    _discovered = True


def method_names() -> tuple[str, ...]:
    """Names of every registered method: ``ddim``, ``renoise``, ``nti``, then others by name."""
    _discover()
    rank = {n: i for i, n in enumerate(ORDER)}
    return tuple(sorted(_REGISTRY, key=lambda n: (rank.get(n, len(ORDER)), n)))


def get_method(name: str) -> type[InversionMethod]:
    """The class of method ``name``; ValueError naming the known methods otherwise."""
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"method must be one of {', '.join(method_names())}, got {name!r}")
    return _REGISTRY[name]


def options_class(name: str) -> type:
    """The options dataclass of method ``name``."""
    return get_method(name).Options
