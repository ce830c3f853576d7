"""One registry of named classes discovered from a package: inversion methods and analyses both
use it. A class registers itself with :meth:`Registry.register` (a decorator) in a module of the
registry's package; the package's modules are imported on first use (``pkgutil``), so adding one is
adding a module. Torch-free."""
from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes with a unique ``name`` attribute. ``package``: where the declaring modules live;
    ``order``: names listed first, in this order (others follow by name); ``skip``: modules of the
    package that declare nothing; ``unknown(name, known)``: the message for an unknown name."""

    def __init__(self, what: str, package: str, order: tuple[str, ...] = (), skip: tuple[str, ...] = (),
                 unknown: Callable[[str, tuple[str, ...]], str] | None = None) -> None:
        self.what, self.package, self.order, self.skip = what, package, order, skip
        self.unknown = unknown or (lambda name, known: f"unknown {what} {name!r}; known: {', '.join(known)}")
        self._classes: dict[str, type[T]] = {}
        self._discovered = False
        self._discovering = False  # this registry's modules are being imported (by the lock's holder)
        self._lock = threading.RLock()

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: add ``cls`` under ``cls.name`` (a second class of that name is an error)."""
        name = getattr(cls, "name", "")
        if not name:
            raise ValueError(f"{cls.__name__} declares no name")
        other = self._classes.get(name)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise ValueError(f"{self.what} {name!r} is declared twice ({other.__module__}, {cls.__module__})")
        self._classes[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests register dummies and take them out)."""
        self._classes.pop(name, None)

    def discover(self) -> None:
        """Import every module of the package once (each registers what it declares). Thread-safe:
        a second thread asking meanwhile waits until every module is in (the console's scan worker
        and its UI thread both read registries; a half-filled one made a concept run's headline
        '-'); a module of the package that asks while being imported sees what is in so far."""
        if self._discovered:
            return
        with self._lock:
            if self._discovered or self._discovering:
                return
            self._discovering = True
            try:
                pkg = importlib.import_module(self.package)
                for info in pkgutil.iter_modules(pkg.__path__):
                    if info.name not in self.skip and not info.name.startswith("_"):
                        importlib.import_module(f"{self.package}.{info.name}")
                self._discovered = True
            finally:
                self._discovering = False

    def classes(self) -> list[type[T]]:
        """Every registered class: the names of ``order`` first, then the others by name."""
        self.discover()
        rank = {n: i for i, n in enumerate(self.order)}
        return [self._classes[n] for n in sorted(self._classes, key=lambda n: (rank.get(n, len(rank)), n))]

    def names(self) -> tuple[str, ...]:
        return tuple(getattr(c, "name") for c in self.classes())

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; ValueError with the ``unknown`` message otherwise."""
        self.discover()
        if name not in self._classes:
            raise ValueError(self.unknown(name, self.names()))
        return self._classes[name]

    def __contains__(self, name: Any) -> bool:
        self.discover()
        return name in self._classes
