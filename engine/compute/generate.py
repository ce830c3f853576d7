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

import csv
import io
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_GUIDANCE = 7.5
DEFAULT_STEPS = 25
DEFAULT_SAMPLER = "lms"
SEED_COLUMNS = ("evaluation_seed", "sd_seed")
GUIDANCE_COLUMNS = ("evaluation_guidance", "sd_guidance_scale")
SIZE_COLUMNS = (("sd_image_height", "sd_image_width"), ("height", "width"))
Progress = Callable[[int, int, dict[str, Any]], None]

__all__ = ["PromptRow", "read_prompt_csv", "spec_problems", "run_generate", "generation_settings"]


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
    """Valid rows and ``(line, message)`` for each bad row. ValueError if the file cannot be read or
    lacks the ``case_number``/``prompt``/seed columns."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read prompt file {str(p)!r}: {e}") from e
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in ("case_number", "prompt") if c not in header]
    if not any(c in header for c in SEED_COLUMNS):
        missing.append(" or ".join(SEED_COLUMNS))
    if missing:
        raise ValueError(f"{p}: the prompt CSV lacks the column(s) {', '.join(missing)} "
                         f"(found: {', '.join(header) or 'none'})")
    rows: list[PromptRow] = []
    bad: list[tuple[int, str]] = []
    seen: dict[int, int] = {}
    for line, row in enumerate(reader, start=2):
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
    """Sampler, steps, default guidance, K and size override of a generate spec (defaults filled)."""
    o = spec.options or {}
    size = o.get("size", spec.image_size)
    return {"sampler": str(o.get("sampler", DEFAULT_SAMPLER)), "steps": o.get("steps", DEFAULT_STEPS),
            "guidance": o.get("guidance", DEFAULT_GUIDANCE), "images_per_prompt": o.get("images_per_prompt", 1),
            "size": size, "prompts": o.get("prompts")}


def spec_problems(spec: Any) -> list[str]:
    """Problems of a ``generate`` spec in words (torch-free, checked before any model loads)."""
    from memtui.engine.detectors.config import detector_problems

    out: list[str] = []
    s = generation_settings(spec)
    if not spec.base and not spec.demo:
        out.append("base is required: a diffusers model folder or a model id in the local HF cache")
    if not s["prompts"]:
        out.append("options.prompts is required: the prompt CSV (--prompts FILE.csv)")
    elif not Path(os.path.expanduser(str(s["prompts"]))).is_file():
        out.append(f"prompt file not found: {s['prompts']}")
    if spec.ablated and not Path(os.path.expanduser(spec.ablated)).exists():
        out.append(f"ablated checkpoint not found: {spec.ablated}")
    from memtui.engine.diffusion.samplers import SAMPLERS  # torch-free at import

    if s["sampler"].lower().replace("-", "_") not in SAMPLERS:
        out.append(f"sampler must be one of {', '.join(SAMPLERS)}, got {s['sampler']!r}")
    for name in ("steps", "images_per_prompt"):
        v = s[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            out.append(f"{name} must be a positive integer, got {v!r}")
    g = s["guidance"]
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not g >= 0:
        out.append(f"guidance must be a number >= 0, got {g!r}")
    if s["size"] is not None and (isinstance(s["size"], bool) or not isinstance(s["size"], int) or s["size"] < 8):
        out.append(f"size must be a pixel count >= 8, got {s['size']!r}")
    out += detector_problems((spec.options or {}).get("detectors"))
    return out


def run_generate(spec: Any, run_dir: Any, progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> dict[str, Any]:
    """Generate (or continue generating) the set of ``spec`` into ``run_dir``; returns the summary
    (also written to summary.json). ``progress(done, total, record)`` after each image; ``cancel``
    stops after the current batch (resumable)."""
    from memtui.engine.runs.lifecycle import run_locked
    from memtui.engine.runs.spec import SpecError

    probs = spec_problems(spec)
    if probs:
        raise SpecError("invalid generate spec:\n" + "\n".join(f"  - {p}" for p in probs))
    return run_locked(_GenerateRun, spec, run_dir, progress, cancel)


@dataclass
class _Job:
    """One image to generate: row, sample index k (seed + k), output size."""

    row: PromptRow
    k: int
    height: int
    width: int

    @property
    def item_id(self) -> str:
        return f"{self.row.case}_{self.k}"


class _GenerateRun:
    """State of one process working on a generate run."""

    def __init__(self, spec: Any, rd: Any, progress: Progress | None, cancel: threading.Event | None) -> None:
        self.spec, self.rd, self.progress, self.cancel = spec, rd, progress, cancel
        self.settings = generation_settings(spec)
        self.batch_size = int(spec.batch_size)
        self.pipe: Any = None
        self.done = self.total = 0

    def _load(self) -> None:
        from memtui.engine.model.loading import load_ablated, load_base
        from memtui.engine.compute.concept import resolve_device

        t = time.monotonic()
        self.device = resolve_device(self.spec.device)
        base = self.spec.base
        if not base and self.spec.demo:  # the demo world's base model shipped with memtui
            from memtui.engine.demo import base_dir

            base = str(base_dir())
        self.pipe = load_base(base, device=self.device, precision=self.spec.precision)
        report = load_ablated(self.pipe, self.spec.ablated).to_dict() if self.spec.ablated else None
        self.rd.event("progress", stage="loaded", seconds=round(time.monotonic() - t, 3), device=self.device,
                      precision=self.spec.precision, load_report=report)

    def _emit(self, rec: dict[str, Any]) -> None:
        self.rd.append_result(rec)
        if rec["status"] == "ok":
            self.rd.event("item_done", item_id=rec["item_id"], set=rec["set"])
        else:
            self.rd.event("item_error", item_id=rec["item_id"], set=rec["set"], error=rec["error"])
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, rec)

    def _record(self, job: _Job, status: str, error: str | None, seconds: float = 0.0) -> dict[str, Any]:
        r = job.row
        return {"item_id": job.item_id, "set": "generated", "prompt": r.prompt,
                "source": f"{self.settings['prompts']}:{r.line}", "case_number": r.case, "k": job.k,
                "seed": r.seed + job.k, "guidance": r.guidance, "height": job.height, "width": job.width,
                "sampler": self.settings["sampler"], "steps": self.settings["steps"], "status": status,
                "error": error, "image": f"imgs/{job.item_id}.png" if status == "ok" else None,
                "seconds": round(seconds, 4)}

    def _run_chunk(self, jobs: list[_Job]) -> None:
        from memtui.engine.data.images import save_png
        from memtui.engine.diffusion.samplers import sample
        from memtui.engine.compute.concept import _empty_cache, is_oom

        start = 0
        while start < len(jobs):
            chunk = jobs[start:start + self.batch_size]
            t = time.monotonic()
            try:
                imgs = sample(self.pipe, [j.row.prompt for j in chunk], [j.row.seed + j.k for j in chunk],
                              [j.row.guidance for j in chunk], sampler=self.settings["sampler"],
                              steps=self.settings["steps"], height=chunk[0].height, width=chunk[0].width)
            except Exception as e:  # noqa: BLE001 - OOM halves the batch, the rest propagates
                if not is_oom(e):
                    raise
                _empty_cache()
                if len(chunk) == 1:
                    self._emit(self._record(chunk[0], "error", f"accelerator out of memory ({type(e).__name__})"))
                    start += 1
                    continue
                self.batch_size = max(1, len(chunk) // 2)
                self.rd.event("progress", stage="oom", batch_size=self.batch_size,
                              message=f"out of memory at batch size {len(chunk)}; retrying at {self.batch_size}")
                continue
            secs = (time.monotonic() - t) / len(chunk)
            for j, img in zip(chunk, imgs):
                save_png(img, self.rd.path / "imgs" / f"{j.item_id}.png")
                self._emit(self._record(j, "ok", None, secs))
            start += len(chunk)

    def run(self) -> dict[str, Any]:
        from memtui.engine.runs.store import atomic_write_bytes, utc_now

        t0, started = time.monotonic(), utc_now()
        src = Path(os.path.expanduser(str(self.settings["prompts"])))
        rows, bad = read_prompt_csv(src, float(self.settings["guidance"]))
        atomic_write_bytes(self.rd.path / "prompts.csv", src.read_bytes())
        K = int(self.settings["images_per_prompt"])
        size = self.settings["size"]
        jobs = [_Job(r, k, int(size or r.height or 0), int(size or r.width or 0)) for r in rows for k in range(K)]
        self.total = len(jobs) + len(bad)
        done_ids = self.rd.done_ids()
        done_ids = {j.item_id for j in jobs if j.item_id in done_ids
                    and (self.rd.path / "imgs" / f"{j.item_id}.png").is_file()}
        self.done = len(done_ids)
        first = not self.rd.read_events()
        self.rd.event("started" if first else "resumed", total=self.total, done=self.done, pid=os.getpid(),
                      batch_size=self.batch_size)
        for line, msg in bad:
            self._emit({"item_id": f"row{line}", "set": "generated", "prompt": None, "source": f"{src}:{line}",
                        "status": "error", "error": msg, "image": None, "seconds": 0.0})
        todo = [j for j in jobs if j.item_id not in done_ids]
        cancelled = False
        if todo:
            self._load()
            native = self.pipe.image_size
            for j in todo:
                j.height, j.width = j.height or native, j.width or native
            f = self.pipe.vae_scale
            for j in [j for j in todo if j.height % f or j.width % f]:
                self._emit(self._record(j, "error", f"{src.name} line {j.row.line}: size {j.width}x{j.height} "
                                        f"is not a multiple of the model's {f}"))
            todo = [j for j in todo if not (j.height % f or j.width % f)]
            groups: dict[tuple[int, int], list[_Job]] = {}
            for j in todo:  # rows of one size batch together, in file order
                groups.setdefault((j.height, j.width), []).append(j)
            for group in groups.values():
                for i in range(0, len(group), self.batch_size):
                    if self.cancel is not None and self.cancel.is_set():
                        cancelled = True
                        break
                    t = time.monotonic()
                    self._run_chunk(group[i:i + self.batch_size])
                    self.rd.event("progress", done=self.done, total=self.total, batch_size=self.batch_size,
                                  seconds=round(time.monotonic() - t, 3))
                if cancelled:
                    break
        summary = self._summary(jobs, bad, cancelled, started, t0)
        if not cancelled and (self.spec.options or {}).get("detectors"):
            from memtui.engine.compute.detect import apply_detectors

            summary["detection"] = apply_detectors(self.rd, self.spec.options["detectors"], self.spec)
        self.rd.write_summary({**(self.rd.read_summary() or {}), **summary})
        self.rd.event("cancelled" if cancelled else "finished", done=self.done, total=self.total,
                      n_errors=summary["n_errors"])
        return self.rd.read_summary() or summary

    def _summary(self, jobs: list[_Job], bad: list[tuple[int, str]], cancelled: bool, started: str,
                 t0: float) -> dict[str, Any]:
        from memtui.engine.runs.store import utc_now

        results = self.rd.read_results()
        ids = [j.item_id for j in jobs] + [f"row{line}" for line, _ in bad]
        recs = [results[i] for i in ids if i in results]
        ok = [r for r in recs if r.get("status") == "ok"]
        errors = [{"item_id": r["item_id"], "error": r.get("error")} for r in recs if r.get("status") != "ok"]
        return {"analysis": "generate", "status": "cancelled" if cancelled else "finished",
                "complete": not cancelled and len(ok) == len(jobs) and not bad,
                "prompts": str(self.settings["prompts"]), "n_rows": len({j.row.case for j in jobs}) + len(bad),
                "n_items": len(ids), "n_ok": len(ok), "n_errors": len(errors), "errors": errors,
                "sets": {"generated": {"n_items": len(ids), "n_ok": len(ok), "n_errors": len(errors)}},
                "sampler": self.settings["sampler"], "steps": self.settings["steps"],
                "images_per_prompt": self.settings["images_per_prompt"], "default_guidance": self.settings["guidance"],
                "size": self.settings["size"], "device": self.spec.device, "precision": self.spec.precision,
                "layout": "official: imgs/<case>_<k>.png + prompts.csv",
                "timing": {"session_started": started, "session_finished": utc_now(),
                           "session_seconds": round(time.monotonic() - t0, 3),
                           "item_seconds_total": sum(float(r.get("seconds") or 0) for r in ok)}}
