"""How screens are reached, declared by each screen module: a module-level
``OPENER = Opener(key=..., description=..., hosts=(...), ...)`` says which key opens it from which
host screens (``browse``, ``run``). Hosts take their key bindings from :func:`bindings` and open a
screen with the ``open_screen('<module>')`` action, which imports the module only when the key is
pressed and asks its screen class to build itself from the host (``open_from(host)``). So adding a
screen is adding one module under ``memtui/screens/``.

Declarations are read from the modules' source (``ast``), without importing them, so hosts can
build their class-level bindings without import cycles. Textual is imported only for ``Binding``.
"""
from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from textual.binding import Binding

__all__ = ["Opener", "declared_openers", "bindings", "open_screen"]

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Opener:
    """A key that opens a screen: ``key`` (Textual key name), ``description`` (footer / palette
    text), ``hosts`` (names of the screens that offer it), ``show`` (in the footer: True, False, or
    the hosts whose footer shows it), ``order`` (position among the host's generated bindings)."""

    key: str
    description: str
    hosts: tuple[str, ...] = ("browse",)
    show: bool | tuple[str, ...] = True
    order: int = 50


@cache
def declared_openers() -> tuple[tuple[str, Opener], ...]:
    """``(module name, Opener)`` of every screen module that declares ``OPENER``, in ``order``."""
    found: list[tuple[str, Opener]] = []
    for path in sorted(HERE.glob("*.py")):
        if path.stem.startswith("_") or path.stem == "openers":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "OPENER" for t in node.targets)
                    and isinstance(node.value, ast.Call)):
                kw = {k.arg: ast.literal_eval(k.value) for k in node.value.keywords if k.arg}
                found.append((path.stem, Opener(**kw)))
    return tuple(sorted(found, key=lambda x: (x[1].order, x[0])))


def bindings(host: str) -> list[Binding]:
    """The bindings that open screens from ``host``."""
    return [Binding(o.key, f"open_screen('{module}')", o.description,
                    show=o.show if isinstance(o.show, bool) else host in o.show)
            for module, o in declared_openers() if host in o.hosts]


def open_screen(host: Any, module: str) -> None:
    """Open the screen declared in ``memtui.screens.<module>`` from ``host`` (a Screen): its class
    with an ``open_from(host)`` classmethod returns the screen to push, or None (it has notified
    why, e.g. nothing selected)."""
    mod = importlib.import_module(f"memtui.screens.{module}")
    for value in vars(mod).values():
        if isinstance(value, type) and hasattr(value, "open_from") and value.__module__ == mod.__name__:
            screen = value.open_from(host)
            if screen is not None:
                host.app.push_screen(screen)
            return
    raise LookupError(f"memtui.screens.{module} declares OPENER but no screen class with open_from()")
