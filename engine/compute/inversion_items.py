"""What the analyses that invert images under the run's model (``concept``, ``memories``, ``scramble``)
share on top of the item loop: the model loaded once per run, one batch inverted and reconstructed,
an inverted item's files and record, per-set statistics and the "normal" reference.

Records follow the run-directory format (``docs/run-format.md``): ``item_id``, ``set``, ``prompt``,
``source``, ``status``, ``error``, ``psnr`` (dB), ``nll`` (nats) plus analysis-specific fields.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from memtui.engine import metrics
from memtui.engine.core.tensors import to_uint8
from memtui.engine.runs.lifecycle import load_run_model
from memtui.engine.runs.loop import ItemLoop

__all__ = ["InversionItems", "EXTRA_BATCH_DIM"]

EXTRA_BATCH_DIM = {"null_embs": 1, "nti_losses": 1}  # InversionOutput.extras laid out [n, B, ...]


class InversionItems(ItemLoop):
    """An :class:`ItemLoop` whose items are inverted and reconstructed with ``spec.method``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipe: Any = None
        self.config: Any = None
        self.size = 0

    def record_usable(self, rec: Mapping[str, Any]) -> bool:
        """Also retry an ``ok`` record whose ``psnr`` or ``nll`` is missing or NaN."""
        for key in ("psnr", "nll"):
            v = rec.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                return False
        return super().record_usable(rec)

    # ------------------------------------------------------------------ model
    def ensure_model(self) -> None:
        """Load the base pipeline (+ ablated weights) once; build the inversion config and the
        image size (``self.size``, pixels)."""
        if self.pipe is None:
            self.pipe, self.config, self.size = load_run_model(self.spec, self.rd, self.device)

    # ------------------------------------------------------------------ one batch
    def invert(self, x: torch.Tensor, prompts: Sequence[str], latents: bool = False,
               keep_extras: bool = False) -> dict[str, Any]:
        """Invert + reconstruct one batch: ``x`` images ``[B, 3, H, W]`` in [-1, 1] or, with
        ``latents=True``, scaled latents ``[B, C, h, w]`` (the SIB direct path). Returns CPU float32
        ``z_0``, ``z_T`` ``[B, C, h, w]``, uint8 ``recon [B, H, W, 3]``, ``extras`` (per-item method
        tensors, batch dim first; only with ``keep_extras``) and ``raw`` (the InversionOutput)."""
        from memtui.engine.inversion.api import invert_images, invert_latents  # looked up per call

        fn = invert_latents if latents else invert_images
        out = fn(self.pipe, x, list(prompts), self.config)
        extras: dict[str, torch.Tensor] = {}
        for k, v in (out.extras or {}).items() if keep_extras else ():
            dim = EXTRA_BATCH_DIM.get(k, 0)
            if isinstance(v, torch.Tensor) and v.ndim > dim and v.shape[dim] == x.shape[0] and k not in ("z_0", "z_T"):
                extras[k] = v.detach().float().cpu().movedim(dim, 0)
        return {"z_0": out.z_0.detach().float().cpu(), "z_T": out.z_T.detach().float().cpu(),
                "recon": to_uint8(out.images_hat), "extras": extras, "raw": out}

    # ------------------------------------------------------------------ records
    def inverted_record(self, item_id: str, set_name: str, prompt: str, source: str, query: np.ndarray,
                        recon: np.ndarray, tensors: Mapping[str, torch.Tensor],
                        images: Mapping[str, np.ndarray] | None = None, **extra: Any) -> dict[str, Any]:
        """Write ``latents/<id>.safetensors`` (``tensors``: ``z_0``, ``z_T``, ...) and the images
        ``query``, ``recon`` (uint8 ``[H, W, 3]``) and ``images``; return the ``ok`` record:
        ``psnr`` = PSNR(query, recon) on uint8, ``nll`` of ``tensors["z_T"]``, ``extra`` fields."""
        z_t = tensors["z_T"]
        self.rd.write_latents(item_id, tensors)
        self.rd.write_image(item_id, "query", query)
        self.rd.write_image(item_id, "recon", recon)
        for kind, img in (images or {}).items():
            self.rd.write_image(item_id, kind, img)
        return {"item_id": item_id, "set": set_name, "prompt": prompt, "source": source,
                "status": "ok", "error": None, "psnr": metrics.psnr(query, recon),
                "nll": float(metrics.nll(z_t[None])[0]), "z_shape": list(z_t.shape),
                "latents": f"latents/{item_id}.safetensors", "query": f"images/{item_id}.query.png",
                "recon": f"images/{item_id}.recon.png", **extra}

    @staticmethod
    def error_record(item_id: str, set_name: str, prompt: str, source: str, msg: str, **extra: Any) -> dict[str, Any]:
        """The ``error`` record of an item (``psnr`` and ``nll`` null)."""
        return {"item_id": item_id, "set": set_name, "prompt": prompt, "source": source,
                "status": "error", "error": msg, "psnr": None, "nll": None, **extra}

    # ------------------------------------------------------------------ summary helpers
    @staticmethod
    def set_stats(results: Mapping[str, Mapping[str, Any]], ids: Sequence[str],
                  keys: Sequence[str] = ("psnr", "nll")) -> dict[str, Any]:
        """``n_items`` / ``n_done`` / ``n_ok`` / ``n_errors`` and ``metrics.summarize`` of each of
        ``keys`` over the ``ok`` records of ``ids`` (missing or non-numeric values count as NaN)."""
        recs = [results[i] for i in ids if i in results]
        ok = [r for r in recs if r.get("status") == "ok"]
        out: dict[str, Any] = {"n_items": len(ids), "n_done": len(recs), "n_ok": len(ok),
                               "n_errors": len(recs) - len(ok)}
        for k in keys:
            out[k] = metrics.summarize([float(r[k]) if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                                        else math.nan for r in ok])
        return out

    def normal(self, d: int, keep_samples: bool = False) -> dict[str, Any]:
        """``metrics.normal_reference`` of the spec for seeds of ``d`` values; its ``samples`` only
        with ``keep_samples``."""
        ref = metrics.normal_reference(d, self.spec.normal, self.spec.normal_samples, self.spec.seed)
        if not keep_samples:
            ref.pop("samples", None)
        return ref

    @staticmethod
    def seed_size(results: Mapping[str, Mapping[str, Any]]) -> int | None:
        """Number of values of a seed ``z_T`` (from the first ``ok`` record with ``z_shape``)."""
        for r in results.values():
            if r.get("status") == "ok" and r.get("z_shape"):
                return int(np.prod(r["z_shape"]))
        return None

    def session_fields(self) -> dict[str, Any]:
        return {"device": self.device, "precision": self.spec.precision, "batch_size": self.batch_size,
                "image_size": self.size or self.spec.image_size, "seed": self.spec.seed,
                "inversion": self.config.to_dict() if self.config is not None else None}
