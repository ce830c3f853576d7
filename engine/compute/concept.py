"""The paper's concept-level analysis (spec §1) as a resumable run: invert every erased-concept image
and every reference image under the ablated model, measure the reconstruction PSNR and the seed NLL,
and compare the NLL distributions (three EMDs and the relative distance).

Per item (``results.jsonl``): ``psnr`` (dB) between the saved query PNG (the preprocessed input)
and the saved reconstruction PNG, ``psnr_vae`` (dB) between the query and the VAE decode of its
encoded latent ``z_0`` (the ceiling a perfect diffusion inversion could reach), ``nll`` (nats) of
``z_T`` under N(0, I). Files are written before the record, so a record implies its files.
"""
from __future__ import annotations

import math
import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from memtui.engine import metrics
from memtui.engine.data.datasets import DatasetError, DatasetItem, read_dataset
from memtui.engine.data.images import ImageError, load_image, preprocess, to_uint8
from memtui.engine.runs.store import RunDir, utc_now
from memtui.engine.runs.spec import RunSpec
from memtui.engine.runs.lifecycle import load_run_model, run_locked

SETS = ("erased", "reference")
EXTRA_BATCH_DIM = {"null_embs": 1, "nti_losses": 1}  # InversionOutput.extras laid out [n, B, ...]
Progress = Callable[[int, int, dict[str, Any]], None]

__all__ = ["run_concept", "select_items", "summarize_run", "is_oom", "resolve_device"]


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator out-of-memory error."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and hasattr(mps, "empty_cache") and torch.backends.mps.is_available():
        mps.empty_cache()


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``mps``, else ``cpu``; other names unchanged."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


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
            if d is None and r.get("z_shape"):
                d = int(np.prod(r["z_shape"]))
        sets[name] = {
            "n_items": n_items, "n_done": len(recs), "n_ok": len(ok), "n_errors": len(recs) - len(ok),
            "psnr": metrics.summarize(_finite_or_nan([r.get("psnr") for r in ok])),
            "psnr_vae": metrics.summarize(_finite_or_nan([r.get("psnr_vae") for r in ok])),
            "nll": metrics.summarize(nlls[name]),
        }
    if d is not None:
        rd_vals = metrics.relative_distance(nlls["erased"], nlls["reference"], d, normal=spec.normal,
                                            n=spec.normal_samples, seed=spec.seed, metric=spec.emd_metric)
    else:
        rd_vals = {"erased_normal": math.nan, "reference_normal": math.nan, "erased_reference": math.nan,
                   "relative_distance": math.nan, "relative_distance_er": math.nan, "metric": spec.emd_metric,
                   "normal": {"mode": spec.normal}, "reasons": ["no item finished: the seed size is unknown"]}
    load_report = None
    for ev in rd.read_events():
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


class _ConceptRun:
    """State of one process working on a concept run."""

    def __init__(self, spec: RunSpec, rd: RunDir, progress: Progress | None, cancel: threading.Event | None) -> None:
        self.spec, self.rd, self.progress, self.cancel = spec, rd, progress, cancel
        self.pipe: Any = None
        self.config: Any = None
        self.batch_size = spec.batch_size
        self.device = resolve_device(spec.device)
        self.done = 0
        self.total = 0
        self.size = 0

    # ------------------------------------------------------------------ model
    def _ensure_model(self) -> None:
        if self.pipe is not None:
            return
        self.pipe, self.config, self.size = load_run_model(self.spec, self.rd, self.device)

    # ------------------------------------------------------------------ records
    def _emit(self, rec: dict[str, Any]) -> None:
        self.rd.append_result(rec)
        if rec["status"] == "ok":
            self.rd.event("item_done", item_id=rec["item_id"], set=rec["set"], psnr=rec["psnr"], nll=rec["nll"])
        else:
            self.rd.event("item_error", item_id=rec["item_id"], set=rec["set"], error=rec["error"])
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, rec)

    def _error(self, set_name: str, it: DatasetItem, msg: str) -> None:
        self._emit({"item_id": it.item_id, "set": set_name, "prompt": it.prompt, "source": it.source,
                    "status": "error", "error": msg, "psnr": None, "psnr_vae": None, "nll": None,
                    "seconds": 0.0})

    # ------------------------------------------------------------------ inversion
    def _invert_chunk(self, x: torch.Tensor, prompts: list[str]) -> dict[str, Any]:
        from memtui.engine.inversion.api import invert_images

        out = invert_images(self.pipe, x, prompts, self.config)
        with torch.no_grad():
            vae_rt = self.pipe.decode_latents(out.z_0.to(self.pipe.device))
        extras: dict[str, torch.Tensor] = {}
        for k, v in (out.extras or {}).items():  # per-item views, batch dim moved first
            dim = EXTRA_BATCH_DIM.get(k, 0)
            if isinstance(v, torch.Tensor) and v.ndim > dim and v.shape[dim] == x.shape[0] and k not in ("z_0", "z_T"):
                extras[k] = v.detach().float().cpu().movedim(dim, 0)
        return {"z_0": out.z_0.detach().float().cpu(), "z_T": out.z_T.detach().float().cpu(),
                "recon": to_uint8(out.images_hat), "vae": to_uint8(vae_rt), "extras": extras}

    def _run_batch(self, batch: list[tuple[str, DatasetItem]]) -> None:
        loaded: list[tuple[str, DatasetItem, Any]] = []
        for set_name, it in batch:
            try:
                loaded.append((set_name, it, load_image(it.source, alpha=self.spec.alpha)))
            except ImageError as e:
                self._error(set_name, it, str(e))
        if not loaded:
            return
        self._ensure_model()
        x = torch.stack([preprocess(img, self.size, self.spec.resample) for _, _, img in loaded])
        query = to_uint8(x)
        start = 0
        while start < len(loaded):
            n = min(self.batch_size, len(loaded) - start)
            t = time.monotonic()
            try:
                res = self._invert_chunk(x[start:start + n], [it.prompt for _, it, _ in loaded[start:start + n]])
            except Exception as e:  # noqa: BLE001 - only OOM is handled, the rest propagates
                if not is_oom(e):
                    raise
                _empty_cache()
                if n == 1:
                    s, it, _ = loaded[start]
                    self._error(s, it, f"accelerator out of memory at batch size 1 ({type(e).__name__})")
                    start += 1
                    continue
                self.batch_size = max(1, n // 2)
                self.rd.event("progress", stage="oom", message=f"out of memory at batch size {n}; "
                              f"retrying at {self.batch_size}", batch_size=self.batch_size)
                continue
            secs = (time.monotonic() - t) / n
            for j in range(n):
                s, it, _ = loaded[start + j]
                self._write_item(s, it, query[start + j], res, j, secs)
            start += n

    def _write_item(self, set_name: str, it: DatasetItem, query: np.ndarray, res: dict[str, Any],
                    j: int, secs: float) -> None:
        iid = it.item_id
        z_t = res["z_T"][j]
        tensors = {"z_0": res["z_0"][j], "z_T": z_t, **{k: v[j] for k, v in res["extras"].items()}}
        self.rd.write_latents(iid, tensors)
        self.rd.write_image(iid, "query", query)
        self.rd.write_image(iid, "recon", res["recon"][j])
        self._emit({
            "item_id": iid, "set": set_name, "prompt": it.prompt, "source": it.source,
            "status": "ok", "error": None,
            "psnr": metrics.psnr(query, res["recon"][j]), "psnr_vae": metrics.psnr(query, res["vae"][j]),
            "nll": float(metrics.nll(z_t[None])[0]), "seconds": round(secs, 4),
            "z_shape": list(z_t.shape), "latents": f"latents/{iid}.safetensors",
            "query": f"images/{iid}.query.png", "recon": f"images/{iid}.recon.png",
        })

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        t0, started = time.monotonic(), utc_now()
        items = select_items(self.spec)
        self.total = len(items)
        ids = {it.item_id for _, it in items}
        done_ids = self.rd.done_ids() & ids
        self.done = len(done_ids)
        first = not self.rd.read_events()
        self.rd.event("started" if first else "resumed", total=self.total, done=self.done, pid=os.getpid(),
                      batch_size=self.batch_size, device=self.device)
        pending = [(s, it) for s, it in items if it.item_id not in done_ids]
        for s, it in pending:
            if it.error is not None:
                self._error(s, it, it.error)
        todo = [(s, it) for s, it in pending if it.error is None]
        i, cancelled = 0, False
        while i < len(todo):
            if self.cancel is not None and self.cancel.is_set():
                cancelled = True
                break
            t = time.monotonic()
            batch = todo[i:i + self.batch_size]
            self._run_batch(batch)
            i += len(batch)
            self.rd.event("progress", done=self.done, total=self.total, batch_size=self.batch_size,
                          seconds=round(time.monotonic() - t, 3))
        status = "cancelled" if cancelled else "finished"
        summary = summarize_run(self.spec, self.rd, items, {
            "status": status, "complete": not cancelled and self.done == self.total,
            "device": self.device, "precision": self.spec.precision, "batch_size": self.batch_size,
            "image_size": self.size or self.spec.image_size, "seed": self.spec.seed,
            "inversion": self.config.to_dict() if self.config is not None else None,
            "timing": {"session_started": started, "session_finished": utc_now(),
                       "session_seconds": round(time.monotonic() - t0, 3)},
        })
        self.rd.write_summary(summary)
        if cancelled:
            self.rd.event("cancelled", done=self.done, total=self.total)
        else:
            self.rd.event("finished", done=self.done, total=self.total,
                          n_errors=len(summary["errors"]), relative_distance=summary["relative_distance"])
        return summary


def run_concept(spec: RunSpec, run_dir: RunDir | str | os.PathLike[str], progress: Progress | None = None,
                cancel: threading.Event | None = None) -> dict[str, Any]:
    """Run or resume the concept-level analysis of ``spec`` in ``run_dir``; returns the summary
    (also written to summary.json; ``summary["status"]`` is ``finished`` or ``cancelled``).

    ``progress(done, total, record)`` is called after each item; setting ``cancel`` stops the run
    after the current batch (resumable). Raises SpecMismatchError / RunLockedError before any
    work; other exceptions are logged as a ``failed`` event and re-raised."""
    return run_locked(_ConceptRun, spec, run_dir, progress, cancel)
