"""Reading run directories for a report: spec, summary and latest item records, the run's method
and concept labels, and flat rows of every number (for the CSV files and tables).

Labels come from :class:`memtui.engine.runs.view.RunView`, the one read-side view the console uses
too: method label = ``spec.method`` + the ablated checkpoint's name (``base`` without one), e.g.
``renoise·esd-parachute``; concept = ``options.concept``, else the erased set's folder name, else the
prompt file's stem (generate runs).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memtui.engine.runs.store import RunDir
from memtui.engine.runs.view import RunView

MEMORY_SETS = ("memory", "target", "control")
ITEM_SKIP = ("detections", "error")

__all__ = ["RunData", "DamagedRunError", "load_run", "run_row", "item_rows", "values", "MEMORY_SETS"]


@dataclass
class RunData:
    """One run as the report sees it."""

    path: Path
    name: str
    spec: dict[str, Any]
    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def view(self) -> RunView:
        return RunView(self.path, self.spec, self.summary)

    @property
    def analysis(self) -> str:
        return self.view.analysis

    @property
    def method(self) -> str:
        """``<method>·<checkpoint>`` (``generate·<sampler>`` for generate runs)."""
        return self.view.method_label

    @property
    def concept(self) -> str:
        return self.view.concept

    @property
    def is_memories(self) -> bool:
        if self.analysis in ("scramble", "concept", "generate"):  # scramble's "target" set is no memories run
            return False
        return self.analysis == "memories" or any(r.get("set") in MEMORY_SETS for r in self.records)

    def ok(self, set_name: str | None = None) -> list[dict[str, Any]]:
        """Records with status ok (of one set, if given)."""
        return [r for r in self.records if r.get("status") == "ok" and (set_name is None or r.get("set") == set_name)]

    def sets(self) -> list[str]:
        return list(dict.fromkeys(str(r.get("set")) for r in self.records if r.get("set") is not None))

    def seed_dim(self) -> int | None:
        """Values per seed, all parts together: the view's (summary, latents headers), else a record's
        ``seed_dim`` or ``z_shape``."""
        d = self.view.seed_dim()
        if d:
            return d
        for r in self.records:
            if isinstance(r.get("seed_dim"), int):
                return int(r["seed_dim"])
            if r.get("z_shape"):
                return int(np.prod(r["z_shape"]))
        return None


class DamagedRunError(ValueError):
    """A run directory whose files cannot be read or have the wrong shape (the message says which)."""


def load_run(path: str | Path, name: str | None = None) -> RunData:
    """Read a run directory (FileNotFoundError if it is not one; ``DamagedRunError`` naming the file
    when spec.json, summary.json or results.jsonl cannot be read or is not what it should be)."""
    rd = RunDir.open(path)
    try:
        spec = rd.read_spec_dict()
    except (OSError, ValueError) as e:
        raise DamagedRunError(f"spec.json cannot be read ({e})") from e
    summary = rd.read_summary()
    summary = {} if summary is None else summary
    for fname, obj in (("spec.json", spec), ("summary.json", summary)):
        if not isinstance(obj, dict):
            raise DamagedRunError(f"{fname} is not a JSON object (it holds a {type(obj).__name__})")
    try:
        records = list(rd.read_results().values())
    except OSError as e:
        raise DamagedRunError(f"results.jsonl cannot be read ({e.strerror or e})") from e
    return RunData(Path(path), name or Path(path).resolve().name, spec, summary, records)


def set_stat(run: RunData, set_name: str, key: str) -> tuple[Any, Any]:
    """(mean, std) of ``summary.sets[set_name][key]`` (None, None where the run has none)."""
    st = ((run.summary.get("sets") or {}).get(set_name) or {}).get(key) or {}
    return st.get("mean"), st.get("std")


def values(run: RunData, set_name: str, key: str) -> np.ndarray:
    """Finite float values of ``key`` over a set's ok records."""
    v = [r.get(key) for r in run.ok(set_name)]
    a = np.array([float(x) for x in v if isinstance(x, (int, float)) and not isinstance(x, bool)], np.float64)
    return a[np.isfinite(a)]


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = obj
    elif obj is None and prefix:
        out[prefix] = math.nan


RUN_KEYS = ("erased_normal", "reference_normal", "erased_reference", "relative_distance", "relative_distance_er", "d")


def run_row(run: RunData) -> dict[str, Any]:
    """Every summary number of a run, flattened (``sets.erased.psnr.mean`` ...), with labels first."""
    row: dict[str, Any] = {"run": run.name, "analysis": run.analysis, "method": run.method,
                           "concept": run.concept, "path": str(run.path)}
    s = run.summary
    for k in RUN_KEYS:
        if k in s:
            row[k] = math.nan if s[k] is None else s[k]
    _flatten("sets", s.get("sets") or {}, row)
    det = {k: v.get("sets", {}) for k, v in (s.get("detection") or {}).items() if isinstance(v, dict)}
    _flatten("detection", det, row)
    for k in ("targets", "average", "overall"):
        if isinstance(s.get(k), dict):
            _flatten(k, s[k], row)
    return row


def item_rows(run: RunData) -> list[dict[str, Any]]:
    """One row per item record: scalars as they are, detections flattened (``det.<key>.<img>.score``)."""
    rows = []
    for r in run.records:
        row: dict[str, Any] = {"run": run.name}
        for k, v in r.items():
            if k in ITEM_SKIP:
                continue
            if isinstance(v, (str, int, float, bool)) or v is None:
                row[k] = v
            elif isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
                row[k] = json.dumps(v)
        for key, res in (r.get("detections") or {}).items():
            for img, d in res.items():
                row[f"det.{key}.{img}.score"] = d.get("score")
                row[f"det.{key}.{img}.flag"] = d.get("flag")
        if r.get("error"):
            row["error"] = r["error"]
        rows.append(row)
    return rows
