"""The detector kinds, found without importing them: every module of this package that declares a
literal ``DETECTOR = {...}`` table is a kind. The table is read from the module's source with
``ast.literal_eval`` (torch-free and quick, so spec validation and ``--help`` can list the kinds
without loading torch or onnxruntime); the module itself is imported only when a detector of its
kind is loaded, and must then provide ``load(path, **options) -> Detector``.

The table's keys: ``kind`` (the name in ``--detectors KIND[:PATH][@CONCEPT]``), ``summary`` (one
line for docs and help), ``needs_path`` (True when there is no shipped model), ``default_concept``
(the concept it scores when the entry names none; None = the run's concept) and ``order`` (where
it is listed; lower first).

**Adding a detector is adding one module** here (see ``docs/architecture.md``).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

__all__ = ["DetectorKind", "detector_kinds", "read_declaration"]

_FIELDS = {"kind": str, "summary": str, "needs_path": bool, "default_concept": (str, type(None)), "order": int}


@dataclass(frozen=True)
class DetectorKind:
    """One declared kind; ``module`` is its module's name relative to this package (``.nudenet``)."""

    kind: str
    summary: str
    needs_path: bool
    default_concept: str | None
    order: int
    module: str


def read_declaration(path: Path) -> dict | None:
    """The literal ``DETECTOR`` table of the module at ``path``, or None when it declares none.
    ValueError when the table is not a literal or lacks a field."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id == "DETECTOR" and node.value is not None:
            try:
                table = ast.literal_eval(node.value)
            except ValueError as exc:
                raise ValueError(f"{path.name}: DETECTOR must be a literal table ({exc})") from None
            bad = [k for k, t in _FIELDS.items() if not isinstance(table.get(k), t)]
            if bad or set(table) - set(_FIELDS):
                raise ValueError(f"{path.name}: DETECTOR needs exactly {', '.join(_FIELDS)} "
                                 f"(wrong or missing: {', '.join(bad or sorted(set(table) - set(_FIELDS)))})")
            return table
    return None


@cache
def detector_kinds() -> dict[str, DetectorKind]:
    """Kind name -> declaration, in listing order."""
    found = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.name.startswith("_"):
            continue
        table = read_declaration(path)
        if table is not None:
            found.append(DetectorKind(module=f".{path.stem}", **table))
    found.sort(key=lambda k: (k.order, k.kind))
    out: dict[str, DetectorKind] = {}
    for k in found:
        if k.kind in out:
            raise ValueError(f"detector kind {k.kind!r} declared twice ({out[k.kind].module}, {k.module})")
        out[k.kind] = k
    return out
