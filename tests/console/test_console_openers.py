"""Screens declare how they are reached (``OPENER``); the hosts' key bindings come from those
declarations, read without importing the screens."""
from __future__ import annotations

import importlib

import pytest

pytest.importorskip("textual")

from memtui.screens import openers  # noqa: E402


def test_declarations_read_from_source_equal_the_imported_ones() -> None:
    declared = dict(openers.declared_openers())
    assert set(declared) == {"inspect", "new_run", "compare", "memories"}
    for module, opener in declared.items():
        mod = importlib.import_module(f"memtui.screens.{module}")
        assert mod.OPENER == opener
        assert any(isinstance(v, type) and hasattr(v, "open_from") and v.__module__ == mod.__name__
                   for v in vars(mod).values())


@pytest.mark.parametrize("host, cls_path", [("browse", "memtui.screens.browse:BrowseScreen"),
                                            ("run", "memtui.screens.run:RunScreen")])
def test_hosts_bind_the_declared_keys(host: str, cls_path: str) -> None:
    module, name = cls_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    bound = {(b.key, b.action) for b in cls.BINDINGS if hasattr(b, "action")}
    want = {(o.key, f"open_screen('{m}')") for m, o in openers.declared_openers() if host in o.hosts}
    assert want and want <= bound
