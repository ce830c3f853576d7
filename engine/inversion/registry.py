"""The inversion-method registry. Every module of :mod:`memtui.engine.inversion.methods` declares
one method (an :class:`~memtui.engine.inversion.base.InversionMethod` decorated with
:func:`register`); the modules are found with ``pkgutil``, so adding a method is adding one module
there. Torch-free: listing methods and validating their options never imports torch.
"""
from __future__ import annotations

from typing import Any

from memtui.engine.core.registry import Registry
from memtui.engine.inversion.base import InversionMethod

__all__ = ["register", "method_names", "get_method", "options_class", "DEFAULT_METHOD", "ORDER", "METHODS"]

ORDER = ("ddim", "renoise", "nti", "edict", "bdia", "fpi")  # the shipped methods, in display order; others follow by name
DEFAULT_METHOD = "renoise"           # the official code's default
METHODS: Registry[InversionMethod] = Registry(
    "inversion method", "memtui.engine.inversion.methods", ORDER,
    unknown=lambda name, known: f"method must be one of {', '.join(known)}, got {name!r}")
register = METHODS.register


def method_names() -> tuple[str, ...]:
    """Names of every registered method in :data:`ORDER`, then others by name."""
    return METHODS.names()


def get_method(name: str) -> type[InversionMethod]:
    """The class of method ``name``; ValueError naming the known methods otherwise."""
    return METHODS.get(name)


def options_class(name: str) -> type:
    """The options dataclass of method ``name``."""
    return get_method(name).Options
