"""Machinery shared by the image-level analyses (``memories``, ``scramble``): model loading once per
run, diffusion inversion of latents or images in batches with out-of-memory back-off, item files
written before their record, progress/cancel plumbing, per-set summaries.

Records follow the run-directory format (``docs/run-format.md``): ``item_id``, ``set``, ``prompt``,
``source``, ``status``, ``error``, ``psnr``, ``nll`` plus analysis-specific fields.
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from memtui.engine import metrics
from memtui.engine.inversion.decoder import is_cancelled
from memtui.engine.data.images import to_uint8
from memtui.engine.runs.store import RunDir
from memtui.engine.runs.spec import RunSpec
from memtui.engine.compute.concept import is_oom, resolve_device
from memtui.engine.runs.lifecycle import load_run_model, run_locked

Progress = Callable[[int, int, dict[str, Any]], None]


class RunCancelled(Exception):
    """The run's cancel signal was seen; the run stops and stays resumable."""


def uint8_to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` (or ``[H, W, 3]``) -> float32 ``[B, 3, H, W]`` in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(img)).float() / 127.5 - 1.0
    return x.movedim(-1, -3).contiguous()


class ItemRun:
    """State of one process working on an image-level run (subclasses implement ``work``)."""

    analysis = ""

    def __init__(self, spec: RunSpec, rd: RunDir, progress: Progress | None, cancel: Any) -> None:
        self.spec, self.rd, self.progress, self.cancel = spec, rd, progress, cancel
        self.pipe: Any = None
        self.config: Any = None
        self.batch_size = spec.batch_size
        self.device = resolve_device(spec.device)
        self.size = 0
        self.done = 0
        self.total = 0

    # ------------------------------------------------------------------ model
    def ensure_model(self) -> None:
        """Load the base pipeline (+ ablated weights) once; build the inversion config."""
        if self.pipe is not None:
            return
        self.pipe, self.config, self.size = load_run_model(self.spec, self.rd, self.device)

    def check_cancel(self) -> None:
        if is_cancelled(self.cancel):
            raise RunCancelled()

    # ------------------------------------------------------------------ inversion
    def invert(self, x: torch.Tensor, prompts: Sequence[str], latents: bool) -> dict[str, Any]:
        """Invert + reconstruct a batch: ``x`` scaled latents ``[B, C, h, w]`` (``latents=True``,
        the SIB direct path) or images ``[B, 3, H, W]`` in [-1, 1]. Splits into ``batch_size``
        chunks, halving the chunk on accelerator OOM. Returns CPU float32 ``z_0``, ``z_T`` and
        uint8 reconstructions ``recon [B, H, W, 3]``."""
        from memtui.engine.inversion.api import invert_images, invert_latents

        outs: list[dict[str, Any]] = []
        start = 0
        while start < x.shape[0]:
            self.check_cancel()
            n = min(self.batch_size, x.shape[0] - start)
            try:
                fn = invert_latents if latents else invert_images
                out = fn(self.pipe, x[start:start + n], list(prompts[start:start + n]), self.config)
            except Exception as e:  # noqa: BLE001 - only OOM is handled
                if not is_oom(e) or n == 1:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.batch_size = max(1, n // 2)
                self.rd.event("progress", stage="oom", batch_size=self.batch_size,
                              message=f"out of memory at batch size {n}; retrying at {self.batch_size}")
                continue
            outs.append({"z_0": out.z_0.detach().float().cpu(), "z_T": out.z_T.detach().float().cpu(),
                         "recon": to_uint8(out.images_hat)})
            start += n
        return {k: (torch.cat([o[k] for o in outs]) if k != "recon" else np.concatenate([o[k] for o in outs]))
                for k in ("z_0", "z_T", "recon")}

    # ------------------------------------------------------------------ records
    def emit(self, rec: dict[str, Any]) -> None:
        """Append a record (files already written), log the event, report progress."""
        self.rd.append_result(rec)
        if rec["status"] == "ok":
            self.rd.event("item_done", item_id=rec["item_id"], set=rec["set"], psnr=rec.get("psnr"),
                          nll=rec.get("nll"))
        else:
            self.rd.event("item_error", item_id=rec["item_id"], set=rec["set"], error=rec.get("error"))
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, rec)

    def error(self, item_id: str, set_name: str, prompt: str, source: str, msg: str, **extra: Any) -> None:
        self.emit({"item_id": item_id, "set": set_name, "prompt": prompt, "source": source,
                   "status": "error", "error": msg, "psnr": None, "nll": None, **extra})

    def write_ok(self, item_id: str, set_name: str, prompt: str, source: str, query: np.ndarray,
                 recon: np.ndarray, tensors: dict[str, torch.Tensor], images: dict[str, np.ndarray] | None = None,
                 **extra: Any) -> dict[str, Any]:
        """Write latents and images (query, recon, extras) then the ``ok`` record; returns it.
        ``psnr`` = PSNR(query, recon) on uint8; ``nll`` of ``tensors["z_T"]``."""
        z_t = tensors["z_T"]
        self.rd.write_latents(item_id, tensors)
        self.rd.write_image(item_id, "query", query)
        self.rd.write_image(item_id, "recon", recon)
        for kind, img in (images or {}).items():
            self.rd.write_image(item_id, kind, img)
        rec = {"item_id": item_id, "set": set_name, "prompt": prompt, "source": source,
               "status": "ok", "error": None, "psnr": metrics.psnr(query, recon),
               "nll": float(metrics.nll(z_t[None])[0]), "z_shape": list(z_t.shape),
               "latents": f"latents/{item_id}.safetensors", "query": f"images/{item_id}.query.png",
               "recon": f"images/{item_id}.recon.png", **extra}
        self.emit(rec)
        return rec

    # ------------------------------------------------------------------ summary helpers
    def set_stats(self, results: dict[str, dict[str, Any]], ids: Sequence[str], set_name: str,
                  keys: Sequence[str] = ("psnr", "nll")) -> dict[str, Any]:
        """count / done / ok / errors and ``metrics.summarize`` of ``keys`` over one set."""
        recs = [results[i] for i in ids if i in results]
        ok = [r for r in recs if r.get("status") == "ok"]
        out: dict[str, Any] = {"n_items": len(ids), "n_done": len(recs), "n_ok": len(ok),
                               "n_errors": len(recs) - len(ok)}
        for k in keys:
            out[k] = metrics.summarize([float(r[k]) if isinstance(r.get(k), (int, float)) else math.nan for r in ok])
        return out

    def normal(self, d: int, keep_samples: bool = False) -> dict[str, Any]:
        """``metrics.normal_reference`` of the spec; its ``samples`` only with ``keep_samples``."""
        ref = metrics.normal_reference(d, self.spec.normal, self.spec.normal_samples, self.spec.seed)
        if not keep_samples:
            ref.pop("samples", None)
        return ref

    # ------------------------------------------------------------------ main
    def work(self) -> tuple[dict[str, Any], list[str]]:  # pragma: no cover - abstract
        """Do the run; returns (summary, all item ids)."""
        raise NotImplementedError

    def summarize(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self) -> dict[str, Any]:
        t0 = time.monotonic()
        ids = self.plan()
        self.total = len(ids)
        self.done = len(self.rd.done_ids() & set(ids))
        first = not self.rd.read_events()
        self.rd.event("started" if first else "resumed", total=self.total, done=self.done, pid=os.getpid(),
                      batch_size=self.batch_size, device=self.device)
        cancelled = False
        try:
            self.work()
        except RunCancelled:
            cancelled = True
        summary = self.summarize()
        summary.update(status="cancelled" if cancelled else "finished",
                       complete=not cancelled and self.rd.done_ids(("ok", "error")) >= set(ids),
                       device=self.device, precision=self.spec.precision, batch_size=self.batch_size,
                       image_size=self.size or self.spec.image_size, seed=self.spec.seed,
                       inversion=self.config.to_dict() if self.config is not None else None,
                       timing={"session_seconds": round(time.monotonic() - t0, 3)})
        self.rd.write_summary(summary)
        if cancelled:
            self.rd.event("cancelled", done=self.done, total=self.total)
        else:
            self.rd.event("finished", done=self.done, total=self.total, n_errors=len(summary.get("errors", [])))
        return summary

    def plan(self) -> list[str]:  # pragma: no cover - abstract
        """All item ids of the run, in order (reads the datasets)."""
        raise NotImplementedError


def run_item_analysis(cls: type[ItemRun], spec: RunSpec, run_dir: RunDir | str | os.PathLike[str],
                      progress: Progress | None, cancel: threading.Event | Any) -> dict[str, Any]:
    """Prepare/lock ``run_dir`` and run ``cls``; logs a ``failed`` event on errors (re-raised)."""
    return run_locked(cls, spec, run_dir, progress, cancel)
