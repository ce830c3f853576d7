"""The one read-side view of a run directory: its labels (name, analysis, method · checkpoint,
concept), its schema version, per-set statistics, headline and final table. The console, the
batch runner and the report all read runs through :class:`RunView`, so they cannot disagree.

Torch-free; reads ``spec.json`` and ``summary.json`` only (tolerating missing or partial files: a
run that has not written its summary yet still has labels).
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from memtui.engine import analyses
from memtui.engine.analyses.base import Analysis, Table
from memtui.engine.core.io import read_json_object
from memtui.engine.detectors.config import run_concept_name
from memtui.engine.runs.schema import LEGACY_FORMAT_VERSION

__all__ = ["RunView", "NO_CHECKPOINT", "checkpoint_label"]

NO_CHECKPOINT = "base"  # the checkpoint label of a run without an ablated checkpoint


def checkpoint_label(ablated: str | None) -> str:
    """The ablated checkpoint's file or folder stem (``esd-parachute``), or ``base`` without one."""
    return Path(str(ablated).rstrip("/")).stem if ablated else NO_CHECKPOINT


@dataclass
class RunView:
    """A run as every reader sees it. ``spec`` and ``summary`` are the raw dicts ({} when missing)."""

    path: Path
    spec: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "RunView":
        """Read ``path``'s spec.json and summary.json (either may be missing)."""
        p = Path(path)
        return cls(p, read_json_object(p / "spec.json") or {}, read_json_object(p / "summary.json") or {})

    # ------------------------------------------------------------------ labels
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def analysis(self) -> str:
        return str(self.summary.get("analysis") or self.spec.get("analysis") or "concept")

    @property
    def declaration(self) -> type[Analysis]:
        """The analysis' declaration (the base declaration for an analysis this install lacks)."""
        try:
            return analyses.get(self.analysis)
        except ValueError:
            return Analysis

    @property
    def method(self) -> str:
        """The inversion method (``generate·<sampler>`` for generate runs)."""
        if self.analysis == "generate":
            return f"generate·{(self.spec.get('options') or {}).get('sampler', 'lms')}"
        return str(self.spec.get("method") or self.summary.get("method") or "?")

    @property
    def checkpoint(self) -> str:
        return checkpoint_label(self.spec.get("ablated"))

    @property
    def method_label(self) -> str:
        """``<method>·<checkpoint>``, e.g. ``renoise·esd-parachute`` or ``ddim·base``; a generate
        run is labelled by its sampler alone (``generate·lms``)."""
        return self.method if self.analysis == "generate" else f"{self.method}·{self.checkpoint}"

    @property
    def concept(self) -> str:
        """``options.concept``, else the erased set's folder name, else the prompt file's stem; '?'."""
        view = SimpleNamespace(options=self.spec.get("options") or {}, erased=self.spec.get("erased"))
        return run_concept_name(view) or "?"

    @property
    def format_version(self) -> int:
        v = self.summary.get("format_version")
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else LEGACY_FORMAT_VERSION

    # ------------------------------------------------------------------ figures
    def set_names(self) -> list[str]:
        sets = self.summary.get("sets")
        return list(sets) if isinstance(sets, dict) else []

    def set_stat(self, set_name: str, metric: str, key: str = "mean") -> float | None:
        """``summary.sets[set].<metric>.<key>`` (e.g. the erased set's mean PSNR), or None."""
        v = ((self.summary.get("sets") or {}).get(set_name) or {}).get(metric)
        v = v.get(key) if isinstance(v, dict) else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
            return None
        return float(v)

    def main_psnr(self, metric: str = "psnr") -> float | None:
        """Mean PSNR of the set the analysis is about (erased, memory, target...); ``metric``
        ``psnr_seed_only`` gives the seed-only reconstruction's (None for runs written before it)."""
        for s in self.declaration.headline_sets or self.declaration.sets:
            v = self.set_stat(s, metric)
            if v is not None:
                return v
        return None

    def number(self, key: str) -> float | None:
        """A top-level number of the summary (e.g. ``relative_distance``), None if missing or NaN."""
        v = self.summary.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
            return None
        return float(v)

    def seed_dim(self) -> int | None:
        """Values per seed, all the method's seed parts together (EDICT: ``z_T`` + ``y_T``):
        ``summary.d`` (or ``normal.d``), else the shapes in the header of the first latents file
        (safetensors header JSON; no torch needed) of the parts named by ``method_seed`` in
        spec.json or summary.json (default ``z_T``)."""
        for v in (self.summary.get("d"), (self.summary.get("normal") or {}).get("d")):
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
        info = self.summary.get("method_seed") or self.spec.get("method_seed") or {}
        parts = info.get("parts") if isinstance(info, dict) else None
        parts = parts or ["z_T"]
        for f in sorted((self.path / "latents").glob("*.safetensors"))[:1]:
            try:
                with open(f, "rb") as fh:
                    (n,) = struct.unpack("<Q", fh.read(8))
                    header = json.loads(fh.read(n))
                shapes = [header.get(p, {}).get("shape") for p in parts]
                if all(shapes):
                    return sum(int(math.prod(sh[1:] if len(sh) == 4 else sh)) for sh in shapes)
            except (OSError, ValueError, struct.error):
                return None
        return None

    def nll_law(self) -> tuple[float, float] | None:
        """(mean, std) in nats of the NLL of a seed drawn from N(0, I_d), d = :meth:`seed_dim`."""
        from memtui.engine.metrics import nll_law  # scipy: loaded when a histogram needs it

        d = self.seed_dim()
        if not d:
            return None
        mean, std = nll_law(d)
        return float(mean), float(std)

    def headline(self) -> str:
        return self.declaration.headline(self.summary) if self.summary else "-"

    def table(self) -> Table:
        return self.declaration.table(self.summary, self.path)
