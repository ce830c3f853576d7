"""The analysis registry. Every module of this package except ``base`` declares one analysis (a
subclass of :class:`~memtui.engine.analyses.base.Analysis` decorated with :func:`register`); the
modules are found with ``pkgutil``, so adding an analysis is adding one module here (plus its
computation under ``memtui.engine.compute``). Torch-free.

- ``concept``     — the paper's concept-level analysis (§1): invert erased and reference sets
- ``memories``    — the Sequential Inversion Block (§2): many memories of one image
- ``scramble``    — the patch-shuffle test of the paper's limitations section
- ``generate``    — an erased set from a prompt CSV (official layout)
- ``prompt_test`` — the demo world's follow-up: does each model still draw each concept?
"""
from __future__ import annotations

from memtui.engine.analyses.registry import (all_analyses, get, get_analysis, main_names, names, register,
                                             unregister)

__all__ = ["register", "unregister", "get", "names", "all_analyses", "main_names", "get_analysis"]
