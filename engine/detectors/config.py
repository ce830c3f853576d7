"""Naming detectors for a run: the ``--detectors KIND[:PATH][@CONCEPT][,…]`` syntax and the
``detectors`` list of a spec's ``options``, validated before any model loads (torch-free).

An entry is ``{"kind": str, "path": str | None, "concept": str | None, "options": dict}``. The
concept defaults per kind (its ``DETECTOR`` table's ``default_concept``: ``nudenet`` -> ``nudity``,
``style`` -> ``vincent-van-gogh``); the others (``imagenet``, ``clip``, ``demo``) take the run's
concept (``options.concept``, else the erased dataset's folder name, else the prompt file's stem).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from memtui.engine.detectors import DETECTOR_KINDS
from memtui.engine.detectors.registry import detector_kinds

# from each kind's DETECTOR table: the concept it scores by default, and whether it needs a PATH
DEFAULT_CONCEPTS = {k: d.default_concept for k, d in detector_kinds().items() if d.default_concept}
NEEDS_PATH = tuple(k for k, d in detector_kinds().items() if d.needs_path)

__all__ = ["parse_detectors", "normalize_entries", "detector_problems", "run_concept_name",
           "resolve_concept", "entry_key"]


def parse_detectors(text: str) -> list[dict[str, Any]]:
    """``"nudenet:/m/320n.onnx,imagenet:/m/resnet-50@church,demo"`` -> entries (ValueError if empty)."""
    out: list[dict[str, Any]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        concept = None
        if "@" in part:
            part, concept = part.rsplit("@", 1)
            concept = concept.strip() or None
        kind, _, path = part.partition(":")
        out.append({"kind": kind.strip(), "path": path.strip() or None, "concept": concept, "options": {}})
    if not out:
        raise ValueError(f"no detector named in {text!r}; expected KIND[:PATH][@CONCEPT][,...]")
    return out


def normalize_entries(value: Any) -> list[dict[str, Any]]:
    """A spec's ``options['detectors']`` (a string in the CLI syntax, or a list of strings/tables)
    -> entries; ValueError for anything else."""
    if value is None:
        return []
    if isinstance(value, str):
        return parse_detectors(value)
    if not isinstance(value, list):
        raise ValueError(f"detectors must be a list, got {type(value).__name__}")
    out: list[dict[str, Any]] = []
    for v in value:
        if isinstance(v, str):
            out += parse_detectors(v)
        elif isinstance(v, dict) and isinstance(v.get("kind"), str):
            extra = {k: x for k, x in v.items() if k not in ("kind", "path", "concept", "options")}
            out.append({"kind": v["kind"], "path": v.get("path"), "concept": v.get("concept"),
                        "options": {**dict(v.get("options") or {}), **extra}})
        else:
            raise ValueError(f"a detector must be 'KIND[:PATH][@CONCEPT]' or a table with 'kind', got {v!r}")
    return out


def detector_problems(value: Any) -> list[str]:
    """Every problem with a detectors setting, in words (unknown kind, missing path or file)."""
    try:
        entries = normalize_entries(value)
    except ValueError as e:
        return [str(e)]
    out: list[str] = []
    for e in entries:
        kind, path = e["kind"], e["path"]
        if kind not in DETECTOR_KINDS:
            out.append(f"unknown detector kind {kind!r}; known: {', '.join(DETECTOR_KINDS)}")
            continue
        if path is None and kind in NEEDS_PATH:
            out.append(f"the {kind} detector needs a local file or folder: {kind}:PATH")
        elif path is not None and not Path(os.path.expanduser(str(path))).exists():
            out.append(f"{kind} detector file not found: {path}")
    return out


def run_concept_name(spec: Any) -> str | None:
    """The concept a run is about: ``options.concept``, else the erased folder's name, else the
    prompt file's stem (``church.csv`` -> ``church``)."""
    opts = getattr(spec, "options", None) or {}
    if opts.get("concept"):
        return str(opts["concept"])
    if getattr(spec, "erased", None):
        return Path(str(spec.erased).rstrip("/")).name or None
    if opts.get("prompts"):
        return Path(str(opts["prompts"])).stem
    return None


def resolve_concept(entry: dict[str, Any], spec: Any = None) -> str | None:
    """The concept ``entry`` scores: its own, the kind's default, or the run's concept."""
    return entry.get("concept") or DEFAULT_CONCEPTS.get(entry["kind"]) or run_concept_name(spec)


def entry_key(kind: str, concept: str) -> str:
    """Record key of one detector's result, e.g. ``nudenet:nudity``."""
    return f"{kind}:{concept}"
