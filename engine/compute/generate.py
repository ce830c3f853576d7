"""Erased-concept sets from prompt files (spec §3.2) as a resumable run.

Input: a prompt CSV in the official format — ``case_number, prompt, evaluation_seed`` (or
``sd_seed``), optional ``evaluation_guidance`` (or ``sd_guidance_scale``; empty = the default 7.5)
and optional size columns ``sd_image_height``/``sd_image_width`` (or ``height``/``width``).
Output, in the run directory itself: ``imgs/<case>_<k>.png`` for k = 0..K−1 and a copy of the CSV
as ``prompts.csv`` — the official layout, readable as an erased set — next to the run files
(``spec.json``, ``events.jsonl``, ``results.jsonl``, ``summary.json``).

Spec fields used: ``base``, ``ablated`` (optional UNet/checkpoint: images of the *erased* model),
``batch_size``, ``precision``, ``device``, ``image_size`` (overrides every row's size). ``options``:
``prompts`` (the CSV, required), ``sampler`` (default ``lms``), ``steps`` (default 25 — not the
spec's ``steps``, which is the inversion's), ``guidance`` (default for rows without one, 7.5),
``guidance_source`` (``row`` | ``official``, see :func:`read_prompt_csv`), ``images_per_prompt``
(K, default 1), ``size`` (same as ``image_size``), ``detectors``.
A bad row becomes an item with ``status: "error"`` (id ``row<line>``); the other rows go on.

Initial noise as the official ``src/generate_dataset.py`` draws it (:func:`row_initial_noise`): per
row ``torch.manual_seed(seed)`` and one CPU ``torch.randn((K, C, h, w))``; image ``k`` starts from
slice ``k``. K = 1 is the single draw memtui always made; for K > 1 the slices equal K consecutive
draws only when ``C·h·w`` is a multiple of 16 (torch's CPU normal sampler works in blocks of 16;
true of every SD size, e.g. 4·64·64), so the batched draw itself is what is reproduced. Each image
is computed on its own (any batch, any resume order gives the same image). Samplers that draw noise in
their steps (``euler_a``, ``euler``; no official counterpart) continue, for image ``k``, the row's
generator after that initial draw, ``k·T`` image-sized draws further on (T = the sampler's steps),
so the K images of a row never share step noise; with K = 1 this is the generator's plain
continuation, as before. Records carry ``noise_draw: "row"``; an ``ok`` record without it (a run
begun when image ``k`` used the seed ``seed + k``) of a row with K > 1 is generated again on resume
rather than mixed with the new draws.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memtui.engine.analyses.generate import GUIDANCE_SOURCES, NOISE_DRAW, Generate
from memtui.engine.core.io import atomic_write_bytes
from memtui.engine.data.datasets import read_csv_table
from memtui.engine.diffusion.samplers import AUTO_SAMPLER, DEFAULT_GUIDANCE
from memtui.engine.runs.loop import ItemLoop, Progress, run_locked
from memtui.engine.runs.spec import SpecError

if TYPE_CHECKING:  # torch is imported when sampling runs (spec validation imports this module cheaply)
    import numpy as np
    import torch

SEED_COLUMNS = ("evaluation_seed", "sd_seed")
GUIDANCE_COLUMNS = ("evaluation_guidance", "sd_guidance_scale")
SIZE_COLUMNS = (("sd_image_height", "sd_image_width"), ("height", "width"))

__all__ = ["PromptRow", "read_prompt_csv", "run_generate", "generation_settings", "row_initial_noise",
           "step_generators", "sample_images"]


@dataclass
class PromptRow:
    """One valid CSV row: ``line`` (1-based, header = 1), size in pixels (None = default);
    ``guidance_from``: the column the guidance was read from, or ``"option"`` (the default)."""

    line: int
    case: int
    prompt: str
    seed: int
    guidance: float
    height: int | None = None
    width: int | None = None
    guidance_from: str = "option"


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


def read_prompt_csv(path: str | os.PathLike[str], default_guidance: float = DEFAULT_GUIDANCE,
                    guidance_source: str = "row") -> tuple[list[PromptRow], list[tuple[int, str]]]:
    """Valid rows and ``(line, message)`` for each bad row (``line``: where the record starts, as
    :func:`~memtui.engine.data.datasets.read_csv_table` counts). ValueError (a DatasetError) if the
    file cannot be read or parsed, or lacks the ``case_number``/``prompt``/seed columns, or
    ``guidance_source`` is not one of :data:`GUIDANCE_SOURCES`.

    Guidance of a row, by ``guidance_source``: ``"row"`` — its ``evaluation_guidance``, else its
    ``sd_guidance_scale``, else ``default_guidance``; ``"official"`` — as the official
    ``generate_dataset.py`` (``row.sd_guidance_scale if hasattr(row, "sd_guidance_scale") else
    guidance_scale``): the ``sd_guidance_scale`` cell when the CSV has that column, else
    ``default_guidance``; ``evaluation_guidance`` is never read (the official nudity CSV has no
    ``sd_guidance_scale``, so every row gets 7.5). An empty ``sd_guidance_scale`` cell gets
    ``default_guidance`` (the official script would pass NaN on)."""
    if guidance_source not in GUIDANCE_SOURCES:
        raise ValueError(f"guidance_source must be one of {', '.join(GUIDANCE_SOURCES)}, got {guidance_source!r}")
    p = Path(path)
    header, records = read_csv_table(p)  # parsed as written: quoted newlines kept, no size cap
    guidance_columns = GUIDANCE_COLUMNS if guidance_source == "row" else ("sd_guidance_scale",)
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
        col, g_txt = _first(row, guidance_columns)
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
        rows.append(PromptRow(line, case, prompt, seed, guidance, height, width, col or "option"))
    return rows, bad


def generation_settings(spec: Any) -> dict[str, Any]:
    """Sampler, steps, default guidance and its source, K, size override and prompt file of a
    generate spec: the ``generate`` declaration's options (``size`` falls back to ``spec.image_size``)."""
    o = Generate.options(spec)
    return {"sampler": o.sampler, "steps": o.steps, "guidance": o.guidance, "guidance_source": o.guidance_source,
            "images_per_prompt": o.images_per_prompt,
            "size": o.size if o.size is not None else spec.image_size, "prompts": o.prompts}


def row_initial_noise(seed: int, images_per_prompt: int, shape: Sequence[int]) -> "torch.Tensor":
    """The unscaled initial latents of one row's K images, float32 ``[K, *shape]`` on the CPU, as the
    official ``generate_dataset.py`` draws them: ``generator = torch.manual_seed(seed)`` then
    ``torch.randn((K, C, h, w), generator=generator)``; image ``k`` starts from slice ``k``. Drawn from
    a private ``torch.Generator("cpu").manual_seed(seed)`` (the same Mersenne-Twister stream as the
    global generator ``torch.manual_seed`` seeds), so the global RNG is left alone."""
    return _row_draw(seed, images_per_prompt, shape)[0]


def _row_draw(seed: int, images_per_prompt: int, shape: Sequence[int]) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(the row's initial latents ``[K, *shape]``, its generator's state after that draw)."""
    import torch

    g = torch.Generator("cpu").manual_seed(int(seed))
    noise = torch.randn((int(images_per_prompt), *(int(d) for d in shape)), generator=g, dtype=torch.float32)
    return noise, g.get_state()


def step_generators(state: "torch.Tensor", ks: Sequence[int], draws: int, shape: Sequence[int]
                    ) -> list["torch.Generator"]:
    """One CPU generator per image ``k`` of a row for the noise a sampler draws in its steps:
    the row's generator (``state``: after the initial draw) advanced by ``k·draws`` draws of one
    image's ``shape``, so image k's step noise follows image k−1's ``draws`` steps without overlap;
    ``k = 0`` is the row's generator itself (K = 1: exactly the continuation used before)."""
    import torch

    out = []
    for k in ks:
        g = torch.Generator("cpu")
        g.set_state(state)
        for _ in range(int(k) * int(draws)):
            torch.randn(tuple(int(d) for d in shape), generator=g, dtype=torch.float32)
        out.append(g)
    return out


def sample_images(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], ks: Sequence[int], images_per_prompt: int,
                  guidance: Sequence[float], sampler: str = "lms", steps: int = 25, height: int | None = None,
                  width: int | None = None) -> "np.ndarray":
    """Image ``ks[i]`` of the row with prompt ``prompts[i]`` and seed ``seeds[i]`` (K =
    ``images_per_prompt`` images per row) -> uint8 ``[B, H, W, 3]``. K = 1 is
    :func:`memtui.engine.diffusion.samplers.sample` itself (its per-row generator draws exactly
    :func:`row_initial_noise`); K > 1 runs the same loop (:func:`_sample_rows`: scaled by
    ``init_noise_sigma``, classifier-free guidance against the empty prompt, per-row guidance) from
    slice ``k`` of the row's official ``[K, C, h, w]`` draw, with step noise (stochastic samplers)
    from :func:`step_generators`."""
    n = len(prompts)
    if not n or len(seeds) != n or len(ks) != n or len(guidance) != n:
        raise ValueError(f"sample_images needs one seed, k and guidance per prompt ({n} prompts, {len(seeds)} "
                         f"seeds, {len(ks)} ks, {len(guidance)} guidance scales)")
    if any(not 0 <= int(k) < int(images_per_prompt) for k in ks):
        raise ValueError(f"every k must be in 0..{int(images_per_prompt) - 1}, got {list(ks)}")
    if int(images_per_prompt) == 1:
        from memtui.engine.diffusion.samplers import sample

        return sample(pipe, prompts, seeds, list(guidance), sampler=sampler, steps=steps, height=height, width=width)
    return _sample_rows(pipe, prompts, seeds, ks, images_per_prompt, guidance, sampler, steps, height, width)


def _sample_rows(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], ks: Sequence[int], images_per_prompt: int,
                 guidance: Sequence[float], sampler: str, steps: int, height: int | None,
                 width: int | None) -> "np.ndarray":
    """``samplers.sample`` started from the official row draws (any K; with K = 1 it gives
    ``sample``'s very images, which the tests check)."""
    import inspect

    import torch

    from memtui.engine.diffusion.samplers import prepare_sampler, sample

    kk = int(images_per_prompt)
    height, width = int(height or pipe.image_size), int(width or pipe.image_size)
    m, f = pipe.size_multiple, pipe.vae_scale
    if height % m or width % m:
        raise ValueError(f"image size {width}x{height} must be a multiple of {m}")
    shape = (pipe.latent_channels, height // f, width // f)
    scheduler = prepare_sampler(pipe, sampler, steps, height, width)
    ancestral = "generator" in inspect.signature(scheduler.step).parameters and not pipe.is_flow
    rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    noise, gens = [], []
    for seed, k in zip(seeds, ks):
        if int(seed) not in rows:  # one draw per row, whichever of its images this batch holds
            rows[int(seed)] = _row_draw(int(seed), kk, shape)
        block, state = rows[int(seed)]
        noise.append(block[int(k)])
        if ancestral:
            gens += step_generators(state, [int(k)], len(scheduler.timesteps), shape)
    return sample(pipe, prompts, seeds, [float(g) for g in guidance], sampler=sampler, steps=steps, height=height,
                  width=width, noise=torch.stack(noise), generators=gens if ancestral else None)


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
    """One image to generate: row, sample index k (slice k of the row's initial noise), output size
    in pixels (0 = native)."""

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
        self.redraw = 0

    def _image_path(self, item_id: str) -> Path:
        return self.rd.path / "imgs" / f"{item_id}.png"

    def _base(self) -> str | None:
        if not self.spec.base and self.spec.demo:  # the demo world's base model shipped with memtui
            from memtui.engine.model.shipped import base_dir

            return str(base_dir())
        return self.spec.base

    def _resolve_sampler(self, family: str | None = None) -> None:
        """Replace ``auto`` by the base family's default sampler: from the loaded pipeline's
        family, else detected from the base folder's ``model_index.json`` (a sharded run's holder
        never loads the model, and its summary must name the sampler its shards used)."""
        if self.settings["sampler"] != AUTO_SAMPLER:
            return
        from memtui.engine.model.families import detect_family, get_family

        if family is not None:
            self.settings["sampler"] = get_family(family).default_sampler
            return
        from memtui.engine.model.loading.base import resolve_pipeline_dir

        try:
            self.settings["sampler"] = detect_family(resolve_pipeline_dir(str(self._base()))).default_sampler
        except (OSError, ValueError):  # no usable base folder: the load says why, and resolves it then
            pass

    def plan(self) -> list[str]:
        self._resolve_sampler()
        self.src = Path(os.path.expanduser(str(self.settings["prompts"])))
        rows, self.bad = read_prompt_csv(self.src, float(self.settings["guidance"]),
                                         str(self.settings["guidance_source"]))
        atomic_write_bytes(self.rd.path / "prompts.csv", self.src.read_bytes())
        size = self.settings["size"]
        self.jobs = [_Job(r, k, int(size or r.height or 0), int(size or r.width or 0))
                     for r in rows for k in range(int(self.settings["images_per_prompt"]))]
        return [j.item_id for j in self.jobs] + [f"row{line}" for line, _ in self.bad]

    def done_ids(self) -> set[str]:
        """Generated images with an ``ok`` record whose PNG is on disk and whose noise is this
        code's (:data:`NOISE_DRAW`). With K > 1 an ``ok`` record without ``noise_draw`` was drawn
        from the seed ``seed + k`` (releases before the official draw order): it is generated again
        (a ``progress`` event ``stage="redraw"`` counts them), never mixed with the new draws. With
        K = 1 both draws are the same numbers: such records stay done."""
        ok = self.rd.done_ids()
        results = self.rd.read_results()
        multi = int(self.settings["images_per_prompt"]) > 1
        done, redraw = set(), 0
        for j in self.jobs:
            if j.item_id not in ok or not self._image_path(j.item_id).is_file():
                continue
            if multi and results.get(j.item_id, {}).get("noise_draw") != NOISE_DRAW:
                redraw += 1
                continue
            done.add(j.item_id)
        self.redraw = redraw  # logged once the run has started (groups)
        return done

    def _load(self) -> None:
        from memtui.engine.runs.lifecycle import load_pipeline

        t = time.monotonic()
        self.pipe, report = load_pipeline(self.spec, self.device, self._base())
        self._resolve_sampler(self.pipe.family)
        self.rd.event("progress", stage="loaded", seconds=round(time.monotonic() - t, 3), device=self.device,
                      precision=self.spec.precision, family=self.pipe.family, load_report=report)

    def _record(self, job: _Job, status: str, error: str | None, seconds: float = 0.0) -> dict[str, Any]:
        r = job.row
        return {"item_id": job.item_id, "set": "generated", "prompt": r.prompt,
                "source": f"{self.settings['prompts']}:{r.line}", "case_number": r.case, "k": job.k,
                "seed": r.seed, "guidance": r.guidance, "guidance_from": r.guidance_from, "noise_draw": NOISE_DRAW,
                "height": job.height, "width": job.width,
                "sampler": self.settings["sampler"], "steps": self.settings["steps"], "status": status,
                "error": error, "image": f"imgs/{job.item_id}.png" if status == "ok" else None,
                "seconds": round(seconds, 4)}

    def groups(self, done: set[str]) -> Iterator[list[_Job]]:
        if self.redraw:
            self.rd.event("progress", stage="redraw", n=self.redraw,
                          reason="images of an earlier release (seed + k per image) are drawn again in the "
                                 "official order (one randn of [K, C, h, w] per row)")
        for line, msg in self.bad:
            if f"row{line}" in done:  # another shard's row
                continue
            self.emit({"item_id": f"row{line}", "set": "generated", "prompt": None, "source": f"{self.src}:{line}",
                       "status": "error", "error": msg, "image": None, "seconds": 0.0})
        todo = [j for j in self.jobs if j.item_id not in done]
        if not todo:
            return
        self._load()
        native, f = self.pipe.image_size, self.pipe.size_multiple
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
        return sample_images(self.pipe, [j.row.prompt for j in jobs], [j.row.seed for j in jobs], [j.k for j in jobs],
                             int(self.settings["images_per_prompt"]), [j.row.guidance for j in jobs],
                             sampler=self.settings["sampler"], steps=self.settings["steps"], height=jobs[0].height,
                             width=jobs[0].width)

    def write(self, job: _Job, images: Any, j: int, seconds: float) -> dict[str, Any]:
        from memtui.engine.data.images import save_png

        save_png(images[j], self._image_path(job.item_id))
        return self._record(job, "ok", None, seconds)

    def failed_record(self, job: _Job, message: str) -> dict[str, Any]:
        return self._record(job, "error", message)

    def is_complete(self, cancelled: bool) -> bool:
        """Every image generated (``ok``, with this code's noise when K > 1) and no bad row."""
        results = self.rd.read_results()
        multi = int(self.settings["images_per_prompt"]) > 1
        return (not cancelled and not self.bad
                and all(results.get(j.item_id, {}).get("status") == "ok"
                        and (not multi or results[j.item_id].get("noise_draw") == NOISE_DRAW) for j in self.jobs))

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
                "guidance_source": self.settings["guidance_source"], "noise_draw": NOISE_DRAW,
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
