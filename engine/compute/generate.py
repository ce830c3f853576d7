"""Erased-concept sets from prompt files (spec §3.2) as a resumable run.

Input: a prompt CSV in the official format — ``case_number, prompt, evaluation_seed`` (or
``sd_seed``), optional ``evaluation_guidance`` (or ``sd_guidance_scale``; empty = the default 7.5)
and optional size columns ``sd_image_height``/``sd_image_width`` (or ``height``/``width``).
Output, in the run directory itself: ``imgs/<case>_<k>.png`` for k = 0..K−1 (seed + k) and a copy of
the CSV as ``prompts.csv`` — the official layout, readable as an erased set — next to the run files
(``spec.json``, ``events.jsonl``, ``results.jsonl``, ``summary.json``).

Spec fields used: ``base``, ``ablated`` (optional UNet/checkpoint: images of the *erased* model),
``batch_size``, ``precision``, ``device``, ``image_size`` (overrides every row's size). ``options``:
``prompts`` (the CSV, required), ``sampler`` (default ``lms``), ``steps`` (default 25 — not the
spec's ``steps``, which is the inversion's), ``guidance`` (default for rows without one, 7.5),
``images_per_prompt`` (K, default 1), ``size`` (same as ``image_size``), ``detectors``.
A bad row becomes an item with ``status: "error"`` (id ``row<line>``); the other rows go on.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memtui.engine.analyses.generate import Generate
from memtui.engine.core.io import atomic_write_bytes
from memtui.engine.data.datasets import read_csv_table
from memtui.engine.diffusion.samplers import DEFAULT_GUIDANCE
from memtui.engine.runs.loop import ItemLoop, Progress, run_locked
from memtui.engine.runs.spec import SpecError

SEED_COLUMNS = ("evaluation_seed", "sd_seed")
GUIDANCE_COLUMNS = ("evaluation_guidance", "sd_guidance_scale")
SIZE_COLUMNS = (("sd_image_height", "sd_image_width"), ("height", "width"))

__all__ = ["PromptRow", "read_prompt_csv", "run_generate", "generation_settings"]


@dataclass
class PromptRow:
    """One valid CSV row: ``line`` (1-based, header = 1), size in pixels (None = default)."""

    line: int
    case: int
    prompt: str
    seed: int
    guidance: float
    height: int | None = None
    width: int | None = None


def _first(row: dict[str, Any], names: tuple[str, ...]) -> tuple[str | None, str]:
    for n in names:
        v = row.get(n)
        if isinstance(v, str) and v.strip():
            return n, v.strip()
    return None, ""


def _int(text: str) -> int:
    f = float(text)
    if not math.isfinite(f) or f != int(f):
        raise ValueError
    return int(f)


def read_prompt_csv(path: str | os.PathLike[str], default_guidance: float = DEFAULT_GUIDANCE
                    ) -> tuple[list[PromptRow], list[tuple[int, str]]]:
    """Valid rows and ``(line, message)`` for each bad row (``line``: where the record starts, as
    :func:`~memtui.engine.data.datasets.read_csv_table` counts). ValueError (a DatasetError) if the
    file cannot be read or parsed, or lacks the ``case_number``/``prompt``/seed columns."""
    p = Path(path)
    header, records = read_csv_table(p)  # parsed as written: quoted newlines kept, no size cap
    missing = [c for c in ("case_number", "prompt") if c not in header]
    if not any(c in header for c in SEED_COLUMNS):
        missing.append(" or ".join(SEED_COLUMNS))
    if missing:
        raise ValueError(f"{p}: the prompt CSV lacks the column(s) {', '.join(missing)} "
                         f"(found: {', '.join(header) or 'none'})")
    rows: list[PromptRow] = []
    bad: list[tuple[int, str]] = []
    seen: dict[int, int] = {}
    for line, row in records:
        where = f"{p.name} line {line}"
        case_txt = (row.get("case_number") or "").strip()
        prompt = (row.get("prompt") or "").strip()
        try:
            case = _int(case_txt)
        except ValueError:
            bad.append((line, f"{where}: case_number {case_txt!r} is not an integer"))
            continue
        if case in seen:
            bad.append((line, f"{where}: duplicate case_number {case} (first on line {seen[case]})"))
            continue
        if not prompt:
            bad.append((line, f"{where}: empty prompt"))
            continue
        col, seed_txt = _first(row, SEED_COLUMNS)
        try:
            seed = _int(seed_txt)
            if not 0 <= seed < 2 ** 63:
                raise ValueError
        except ValueError:
            bad.append((line, f"{where}: {col or SEED_COLUMNS[0]} {seed_txt!r} is not a seed (integer 0..2^63-1)"))
            continue
        col, g_txt = _first(row, GUIDANCE_COLUMNS)
        try:
            guidance = float(g_txt) if g_txt else float(default_guidance)
            if not math.isfinite(guidance) or guidance < 0:
                raise ValueError
        except ValueError:
            bad.append((line, f"{where}: {col} {g_txt!r} is not a guidance scale (number >= 0)"))
            continue
        height = width = None
        size_err = None
        for hc, wc in SIZE_COLUMNS:
            h_txt, w_txt = (row.get(hc) or "").strip(), (row.get(wc) or "").strip()
            if h_txt or w_txt:
                try:
                    height, width = _int(h_txt), _int(w_txt)
                    if height < 8 or width < 8:
                        raise ValueError
                except ValueError:
                    size_err = f"{where}: size {hc}={h_txt!r} {wc}={w_txt!r} is not a pair of pixel counts"
                break
        if size_err:
            bad.append((line, size_err))
            continue
        seen[case] = line
        rows.append(PromptRow(line, case, prompt, seed, guidance, height, width))
    return rows, bad


def generation_settings(spec: Any) -> dict[str, Any]:
    """Sampler, steps, default guidance, K, size override and prompt file of a generate spec: the
    ``generate`` declaration's options (``size`` falls back to ``spec.image_size``)."""
    o = Generate.options(spec)
    return {"sampler": o.sampler, "steps": o.steps, "guidance": o.guidance, "images_per_prompt": o.images_per_prompt,
            "size": o.size if o.size is not None else spec.image_size, "prompts": o.prompts}


def run_generate(spec: Any, run_dir: Any, progress: Progress | None = None, cancel: Any = None) -> dict[str, Any]:
    """Generate (or continue generating) the set of ``spec`` into ``run_dir``; returns the summary
    (also written to summary.json). ``progress(done, total, record)`` after each image; ``cancel``
    stops after the current batch (resumable). SpecError before anything is written if the spec
    is invalid."""
    probs = Generate.problems(spec)
    if probs:
        raise SpecError("invalid generate spec:\n" + "\n".join(f"  - {p}" for p in probs))
    return run_locked(_GenerateRun, spec, run_dir, progress, cancel)


@dataclass
class _Job:
    """One image to generate: row, sample index k (seed + k), output size in pixels (0 = native)."""

    row: PromptRow
    k: int
    height: int
    width: int

    @property
    def item_id(self) -> str:
        return f"{self.row.case}_{self.k}"


class _GenerateRun(ItemLoop):
    """The generate analysis on the item loop: one group per output size, in file order."""

    analysis = "generate"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = generation_settings(self.spec)
        self.pipe: Any = None

    def _image_path(self, item_id: str) -> Path:
        return self.rd.path / "imgs" / f"{item_id}.png"

    def plan(self) -> list[str]:
        self.src = Path(os.path.expanduser(str(self.settings["prompts"])))
        rows, self.bad = read_prompt_csv(self.src, float(self.settings["guidance"]))
        atomic_write_bytes(self.rd.path / "prompts.csv", self.src.read_bytes())
        size = self.settings["size"]
        self.jobs = [_Job(r, k, int(size or r.height or 0), int(size or r.width or 0))
                     for r in rows for k in range(int(self.settings["images_per_prompt"]))]
        return [j.item_id for j in self.jobs] + [f"row{line}" for line, _ in self.bad]

    def done_ids(self) -> set[str]:
        """Generated images with an ``ok`` record whose PNG is on disk."""
        ok = self.rd.done_ids()
        return {j.item_id for j in self.jobs if j.item_id in ok and self._image_path(j.item_id).is_file()}

    def _load(self) -> None:
        from memtui.engine.runs.lifecycle import load_pipeline

        t = time.monotonic()
        base = self.spec.base
        if not base and self.spec.demo:  # the demo world's base model shipped with memtui
            from memtui.engine.model.shipped import base_dir

            base = str(base_dir())
        self.pipe, report = load_pipeline(self.spec, self.device, base)
        self.rd.event("progress", stage="loaded", seconds=round(time.monotonic() - t, 3), device=self.device,
                      precision=self.spec.precision, load_report=report)

    def _record(self, job: _Job, status: str, error: str | None, seconds: float = 0.0) -> dict[str, Any]:
        r = job.row
        return {"item_id": job.item_id, "set": "generated", "prompt": r.prompt,
                "source": f"{self.settings['prompts']}:{r.line}", "case_number": r.case, "k": job.k,
                "seed": r.seed + job.k, "guidance": r.guidance, "height": job.height, "width": job.width,
                "sampler": self.settings["sampler"], "steps": self.settings["steps"], "status": status,
                "error": error, "image": f"imgs/{job.item_id}.png" if status == "ok" else None,
                "seconds": round(seconds, 4)}

    def groups(self, done: set[str]) -> Iterator[list[_Job]]:
        for line, msg in self.bad:
            self.emit({"item_id": f"row{line}", "set": "generated", "prompt": None, "source": f"{self.src}:{line}",
                       "status": "error", "error": msg, "image": None, "seconds": 0.0})
        todo = [j for j in self.jobs if j.item_id not in done]
        if not todo:
            return
        self._load()
        native, f = self.pipe.image_size, self.pipe.vae_scale
        for j in todo:
            j.height, j.width = j.height or native, j.width or native
        for j in [j for j in todo if j.height % f or j.width % f]:
            self.emit(self._record(j, "error", f"{self.src.name} line {j.row.line}: size {j.width}x{j.height} "
                                   f"is not a multiple of the model's {f}"))
        groups: dict[tuple[int, int], list[_Job]] = {}
        for j in todo:  # rows of one size batch together, in file order
            if not (j.height % f or j.width % f):
                groups.setdefault((j.height, j.width), []).append(j)
        yield from groups.values()

    def compute(self, jobs: Sequence[_Job]) -> Any:
        from memtui.engine.diffusion.samplers import sample

        return sample(self.pipe, [j.row.prompt for j in jobs], [j.row.seed + j.k for j in jobs],
                      [j.row.guidance for j in jobs], sampler=self.settings["sampler"],
                      steps=self.settings["steps"], height=jobs[0].height, width=jobs[0].width)

    def write(self, job: _Job, images: Any, j: int, seconds: float) -> dict[str, Any]:
        from memtui.engine.data.images import save_png

        save_png(images[j], self._image_path(job.item_id))
        return self._record(job, "ok", None, seconds)

    def failed_record(self, job: _Job, message: str) -> dict[str, Any]:
        return self._record(job, "error", message)

    def is_complete(self, cancelled: bool) -> bool:
        """Every image generated (``ok``) and no bad row."""
        results = self.rd.read_results()
        return (not cancelled and not self.bad
                and all(results.get(j.item_id, {}).get("status") == "ok" for j in self.jobs))

    def summarize(self) -> dict[str, Any]:
        results = self.rd.read_results()
        ids = [j.item_id for j in self.jobs] + [f"row{line}" for line, _ in self.bad]
        recs = [results[i] for i in ids if i in results]
        ok = [r for r in recs if r.get("status") == "ok"]
        errors = [{"item_id": r["item_id"], "error": r.get("error")} for r in recs if r.get("status") != "ok"]
        return {"analysis": "generate",
                "prompts": str(self.settings["prompts"]), "n_rows": len({j.row.case for j in self.jobs}) + len(self.bad),
                "n_items": len(ids), "n_ok": len(ok), "n_errors": len(errors), "errors": errors,
                "sets": {"generated": {"n_items": len(ids), "n_ok": len(ok), "n_errors": len(errors)}},
                "sampler": self.settings["sampler"], "steps": self.settings["steps"],
                "images_per_prompt": self.settings["images_per_prompt"], "default_guidance": self.settings["guidance"],
                "size": self.settings["size"], "device": self.device, "precision": self.spec.precision,
                "layout": "official: imgs/<case>_<k>.png + prompts.csv",
                "timing": {"item_seconds_total": sum(float(r.get("seconds") or 0) for r in ok)}}

    def finish(self, summary: dict[str, Any], cancelled: bool) -> dict[str, Any]:
        """Score the generated images with ``options.detectors`` (finished runs only)."""
        detectors = (self.spec.options or {}).get("detectors")
        if not cancelled and detectors:
            from memtui.engine.compute.detect import apply_detectors

            summary["detection"] = apply_detectors(self.rd, detectors, self.spec)
        return summary

    def write_summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        """summary.json = the stored one updated with ``summary`` (keeps an earlier ``detection``)."""
        self.rd.write_summary({**(self.rd.read_summary() or {}), **summary})
        return self.rd.read_summary() or summary

    def end_fields(self, summary: dict[str, Any]) -> dict[str, Any]:
        return {"n_errors": summary["n_errors"]}
