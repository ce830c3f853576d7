"""The paper's concept-level analysis (spec §1) as a resumable run: invert every erased-concept image
and every reference image under the ablated model, measure the reconstruction PSNR and the seed NLL,
and compare the NLL distributions (three EMDs and the relative distance).

Per item (``results.jsonl``): ``psnr`` (dB) between the saved query PNG (the preprocessed input)
and the saved reconstruction PNG (the method's own), ``psnr_seed_only`` (dB, plain DDIM from ``z_T``
alone), ``psnr_vae`` (dB) between the query and the VAE decode of its encoded latent ``z_0`` (the
ceiling a perfect diffusion inversion could reach), ``nll`` (nats) of the method's seed under
N(0, I_d) (all its parts: ``d = seed_dim``; the EMDs and the relative distance use it). Files are
written before the record, so a record implies its files.
"""
from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memtui.engine import metrics
from memtui.engine.compute.inversion_items import InversionItems
from memtui.engine.core.tensors import to_uint8
from memtui.engine.data.datasets import DatasetError, DatasetItem, read_dataset
from memtui.engine.data.images import ImageError, load_image, preprocess
from memtui.engine.runs.loop import Progress, run_locked
from memtui.engine.runs.spec import RunSpec
from memtui.engine.runs.store import RunDir

SETS = ("erased", "reference")

__all__ = ["run_concept", "select_items", "summarize_run"]


def select_items(spec: RunSpec) -> list[tuple[str, DatasetItem]]:
    """(set, item) pairs of the run in order: erased items (capped by ``max_items``), then reference
    items (``num_reference``, default = number of erased items, also capped by ``max_items``)."""
    erased = read_dataset(spec.erased, "erased")
    reference = read_dataset(spec.reference, "reference")
    if spec.max_items:
        erased = erased[: spec.max_items]
    n_ref = spec.num_reference or len(erased)
    if spec.max_items:
        n_ref = min(n_ref, spec.max_items)
    reference = reference[:n_ref]
    for name, items, root in (("erased", erased, spec.erased), ("reference", reference, spec.reference)):
        if not items:
            raise DatasetError(f"the {name} set ({root}) has no items")
    return [("erased", it) for it in erased] + [("reference", it) for it in reference]


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("memtui", "torch", "diffusers", "transformers", "numpy", "scipy", "safetensors", "pillow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _finite_or_nan(values: list[Any]) -> list[float]:
    return [float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan for v in values]


def summarize_run(spec: RunSpec, rd: RunDir, items: list[tuple[str, DatasetItem]],
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json of a concept run from its results.jsonl (only the ids of ``items`` count)."""
    results = rd.read_results()
    sets: dict[str, Any] = {}
    nlls: dict[str, list[float]] = {}
    errors: list[dict[str, Any]] = []
    d = None
    for name in SETS:
        recs = [results[it.item_id] for s, it in items if s == name and it.item_id in results]
        n_items = sum(1 for s, _ in items if s == name)
        ok = [r for r in recs if r.get("status") == "ok"]
        errors += [{"item_id": r["item_id"], "set": name, "error": r.get("error")} for r in recs if r.get("status") != "ok"]
        nlls[name] = _finite_or_nan([r.get("nll") for r in ok])
        for r in ok:
            if d is None and isinstance(r.get("seed_dim"), int):
                d = int(r["seed_dim"])
            elif d is None and r.get("z_shape"):
                d = int(np.prod(r["z_shape"]))
        sets[name] = {
            "n_items": n_items, "n_done": len(recs), "n_ok": len(ok), "n_errors": len(recs) - len(ok),
            "psnr": metrics.summarize(_finite_or_nan([r.get("psnr") for r in ok])),
            "psnr_seed_only": metrics.summarize(_finite_or_nan([r.get("psnr_seed_only") for r in ok])),
            "psnr_vae": metrics.summarize(_finite_or_nan([r.get("psnr_vae") for r in ok])),
            "nll": metrics.summarize(nlls[name]),
        }
        parts = sorted({k for r in ok for k in (r.get("nll_parts") or {})})
        if parts:
            sets[name]["nll_parts"] = {k: metrics.summarize(_finite_or_nan([(r.get("nll_parts") or {}).get(k)
                                                                            for r in ok])) for k in parts}
    if d is not None:
        rd_vals = metrics.relative_distance(nlls["erased"], nlls["reference"], d, normal=spec.normal,
                                            n=spec.normal_samples, seed=spec.seed, metric=spec.emd_metric)
    else:
        rd_vals = {"erased_normal": math.nan, "reference_normal": math.nan, "erased_reference": math.nan,
                   "relative_distance": math.nan, "relative_distance_er": math.nan, "metric": spec.emd_metric,
                   "normal": {"mode": spec.normal}, "reasons": ["no item finished: the seed size is unknown"]}
    load_report = None
    for ev in rd.read_all_events():
        if ev.get("type") == "progress" and "load_report" in ev:
            load_report = ev["load_report"]
    item_seconds = sum(float(r.get("seconds") or 0.0) for r in results.values())
    summary: dict[str, Any] = {
        "analysis": "concept", "method": spec.method, "steps": spec.steps,
        "sets": sets,
        "erased_normal": rd_vals["erased_normal"], "reference_normal": rd_vals["reference_normal"],
        "erased_reference": rd_vals["erased_reference"], "relative_distance": rd_vals["relative_distance"],
        "relative_distance_er": rd_vals["relative_distance_er"], "emd_metric": rd_vals["metric"],
        "normal": rd_vals["normal"], "d": d, "reasons": rd_vals.get("reasons", []),
        "load_report": load_report, "errors": errors,
        "timing": {"item_seconds_total": item_seconds},
        "versions": _versions(),
    }
    if extra:
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(summary.get(k), dict):
                summary[k] = {**summary[k], **v}
            else:
                summary[k] = v
    return summary


@dataclass
class _Job:
    """One loaded item: its set, dataset item, preprocessed image ``x [3, H, W]`` in [-1, 1] and the
    query pixels ``query [H, W, 3]`` uint8 (what the PSNR compares with)."""

    set_name: str
    item: DatasetItem
    x: torch.Tensor
    query: np.ndarray


class _ConceptRun(InversionItems):
    """The concept analysis on the item loop: batches of erased, then reference items."""

    analysis = "concept"

    def plan(self) -> list[str]:
        self.items = select_items(self.spec)
        return [it.item_id for _, it in self.items]

    def _error(self, set_name: str, it: DatasetItem, msg: str) -> dict[str, Any]:
        return self.error_record(it.item_id, set_name, it.prompt, it.source, msg, psnr_vae=None, seconds=0.0)

    def groups(self, done: set[str]) -> Iterator[list[_Job]]:
        pending = [(s, it) for s, it in self.items if it.item_id not in done]
        for s, it in pending:  # dataset problems (no caption, bad CSV row) first
            if it.error is not None:
                self.emit(self._error(s, it, it.error))
        todo = [(s, it) for s, it in pending if it.error is None]
        for batch in self.batches(todo):
            jobs = []
            for s, it in batch:  # one image decoded at a time, reduced toward the model's size
                try:
                    img = load_image(it.source, alpha=self.spec.alpha, size=self.size or self.spec.image_size)
                except ImageError as e:
                    self.emit(self._error(s, it, str(e)))
                    continue
                self.ensure_model()
                x = preprocess(img, self.size, self.spec.resample)
                jobs.append(_Job(s, it, x, to_uint8(x)))
            if jobs:
                yield jobs

    def compute(self, jobs: Sequence[_Job]) -> dict[str, Any]:
        res = self.invert(torch.stack([j.x for j in jobs]), [j.item.prompt for j in jobs], keep_extras=True)
        with torch.no_grad():
            vae_rt = self.pipe.decode_latents(res.pop("raw").z_0.to(self.pipe.device))
        res["vae"] = to_uint8(vae_rt)
        return res

    def write(self, job: _Job, res: dict[str, Any], j: int, seconds: float) -> dict[str, Any]:
        it = job.item
        tensors = {"z_0": res["z_0"][j], **self.seed_tensors(res, j), **{k: v[j] for k, v in res["extras"].items()}}
        seed_only = res["seed_only"][j] if res["seed_only"] is not None else None
        return self.inverted_record(it.item_id, job.set_name, it.prompt, it.source, job.query, res["recon"][j],
                                    tensors, seed_only=seed_only, psnr_vae=metrics.psnr(job.query, res["vae"][j]),
                                    seconds=round(seconds, 4))

    def failed_record(self, job: _Job, message: str) -> dict[str, Any]:
        return self._error(job.set_name, job.item, message)

    def summarize(self) -> dict[str, Any]:
        return summarize_run(self.spec, self.rd, self.items)

    def end_fields(self, summary: dict[str, Any]) -> dict[str, Any]:
        return {"n_errors": len(summary["errors"]), "relative_distance": summary["relative_distance"]}


def run_concept(spec: RunSpec, run_dir: RunDir | str | os.PathLike[str], progress: Progress | None = None,
                cancel: Any = None) -> dict[str, Any]:
    """Run or resume the concept-level analysis of ``spec`` in ``run_dir``; returns the summary
    (also written to summary.json; ``summary["status"]`` is ``finished`` or ``cancelled``).

    ``progress(done, total, record)`` is called after each item; setting ``cancel`` stops the run
    after the current batch (resumable). Raises SpecMismatchError / RunLockedError before any
    work; other exceptions are logged as a ``failed`` event and re-raised."""
    return run_locked(_ConceptRun, spec, run_dir, progress, cancel)
