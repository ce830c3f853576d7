"""What the analyses that invert images under the run's model (``concept``, ``memories``, ``scramble``)
share on top of the item loop: the model loaded once per run, one batch inverted and reconstructed,
an inverted item's files and record, per-set statistics and the "normal" reference.

Records follow the run-directory format (``docs/run-format.md``): ``item_id``, ``set``, ``prompt``,
``source``, ``status``, ``error``, ``psnr`` (dB, the method's own reconstruction), ``psnr_seed_only``
(dB, plain DDIM from ``z_T`` alone), ``nll`` (nats, the joint NLL of the method's seed parts under
N(0, I) of ``seed_dim`` values), ``nll_parts`` (per part, methods whose seed has several parts)
plus analysis-specific fields.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from memtui.engine import metrics
from memtui.engine.core.tensors import to_uint8
from memtui.engine.inversion.registry import get_method
from memtui.engine.runs.lifecycle import inversion_config, load_run_model
from memtui.engine.runs.loop import ItemLoop
from memtui.engine.runs.spec import AUTO_BATCH

__all__ = ["InversionItems", "method_seed"]


def method_seed(method: str) -> dict[str, Any] | None:
    """What ``method`` calls its seed (:meth:`~memtui.engine.inversion.base.InversionMethod.seed_info`),
    as summary.json's ``method_seed``; None for a method no longer registered."""
    try:
        return get_method(method).seed_info()
    except ValueError:
        return None


def probe_words(info: Mapping[str, Any]) -> str:
    """The batch-size probe's figures in words (for the run's log)."""
    if "per_item_mib" not in info:
        return str(info.get("reason", "not probed"))
    return (f"{info['per_item_mib']} MiB per item, {info['fixed_mib']} MiB fixed, "
            f"{info['free_mib']} MiB free, {int(info['headroom'] * 100)}% planned")


class InversionItems(ItemLoop):
    """An :class:`ItemLoop` whose items are inverted and reconstructed with ``spec.method``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipe: Any = None
        self.config: Any = None
        self.size = 0
        info = method_seed(self.spec.method)
        self.seed_parts: tuple[str, ...] = tuple(info["parts"]) if info else ("z_T",)

    def record_usable(self, rec: Mapping[str, Any]) -> bool:
        """Also retry an ``ok`` record whose ``psnr`` or ``nll`` is missing or NaN, or whose
        ``psnr_seed_only`` is NaN (records written before it existed lack it and stay usable)."""
        for key in ("psnr", "psnr_seed_only", "nll"):
            if key == "psnr_seed_only" and key not in rec:
                continue
            v = rec.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                return False
        return super().record_usable(rec)

    # ------------------------------------------------------------------ model
    def ensure_model(self) -> None:
        """Load the base pipeline (+ ablated weights) once; build the inversion config and the
        image size (``self.size``, pixels); with ``batch_size = "auto"`` measure the batch size
        (:func:`~memtui.engine.model.speed.auto_batch_size`), then ``torch.compile`` the UNet when
        the spec asks (after the probe, so the probe's shapes are not compiled)."""
        if self.pipe is not None:
            return
        from memtui.engine.model.speed import auto_batch_size, compile_unet

        self.pipe, self.config, self.size = load_run_model(self.spec, self.rd, self.device)
        if self.spec.batch_size == AUTO_BATCH:
            batch, info = auto_batch_size(self.pipe.device, self._probe, self.batch_size)
            self.batch_size = batch
            self.rd.event("progress", stage="batch_size", batch_size=batch, probe=info,
                          message=f"batch size {batch} (auto: {probe_words(info)})")
        if self.spec.compile:
            compiled = compile_unet(self.pipe)
            self.rd.event("progress", stage="compile", compiled=compiled,
                          message="UNet compiled with torch.compile (the first batch of each shape compiles)")

    def _probe(self, b: int) -> None:
        """One batch of ``b`` mid-gray images inverted and reconstructed in 2 steps: the memory
        probe of the automatic batch size (results discarded)."""
        from memtui.engine.inversion.api import invert_images

        x = torch.zeros(b, 3, self.size, self.size)
        invert_images(self.pipe, x, [""] * b, dataclasses.replace(self.config, steps=2))

    # ------------------------------------------------------------------ one batch
    def invert(self, x: torch.Tensor, prompts: Sequence[str], latents: bool = False,
               keep_extras: bool = False) -> dict[str, Any]:
        """Invert + reconstruct one batch: ``x`` images ``[B, 3, H, W]`` in [-1, 1] or, with
        ``latents=True``, scaled latents ``[B, C, h, w]`` (the SIB direct path). Returns CPU float32
        ``z_0``, ``z_T`` ``[B, C, h, w]``, ``state`` (the seed's further parts, name -> ``[B, C, h, w]``),
        uint8 ``recon [B, H, W, 3]`` (the method's reconstruction), ``seed_only`` (uint8, plain DDIM from
        ``z_T`` alone; None when that *is* ``recon``), ``extras`` (per-item method tensors, batch dim
        first; only with ``keep_extras``) and ``raw`` (the InversionOutput)."""
        from memtui.engine.inversion.api import invert_images, invert_latents  # looked up per call

        fn = invert_latents if latents else invert_images
        out = fn(self.pipe, x, list(prompts), self.config)
        extras: dict[str, torch.Tensor] = {}
        for k, v in (out.extras or {}).items() if keep_extras else ():
            dim = get_method(self.spec.method).extras_batch_dim.get(k, 0)
            if isinstance(v, torch.Tensor) and v.ndim > dim and v.shape[dim] == x.shape[0] and k not in ("z_0", "z_T"):
                extras[k] = v.detach().float().cpu().movedim(dim, 0)
        shared = out.images_seed_only is None or out.images_seed_only is out.images_hat
        return {"z_0": out.z_0.detach().float().cpu(), "z_T": out.z_T.detach().float().cpu(),
                "state": {k: v.detach().float().cpu() for k, v in out.state.items()},
                "recon": to_uint8(out.images_hat), "seed_only": None if shared else to_uint8(out.images_seed_only),
                "extras": extras, "raw": out}

    # ------------------------------------------------------------------ seeds
    @staticmethod
    def seed_vector(tensors: Mapping[str, torch.Tensor], parts: Sequence[str]) -> torch.Tensor:
        """The seed as one flat float64 vector: the ``parts`` of ``tensors`` (each ``[C, h, w]``),
        flattened and concatenated in order (for one-part methods, ``z_T`` flattened)."""
        return torch.cat([tensors[p].detach().to("cpu", torch.float64).reshape(-1) for p in parts])

    def read_seed(self, item_id: str) -> torch.Tensor:
        """The stored seed of ``item_id`` as :meth:`seed_vector` (parts missing from the file: ``z_T`` only)."""
        lat = self.rd.read_latents(item_id)
        parts = [p for p in self.seed_parts if p in lat] or ["z_T"]
        return self.seed_vector(lat, parts)

    def seed_tensors(self, res: Mapping[str, Any], j: int) -> dict[str, torch.Tensor]:
        """Item ``j``'s seed parts of an :meth:`invert` result: ``{"z_T": ..., **state}``, ``[C, h, w]`` each."""
        return {"z_T": res["z_T"][j], **{k: v[j] for k, v in res["state"].items()}}

    # ------------------------------------------------------------------ records
    def inverted_record(self, item_id: str, set_name: str, prompt: str, source: str, query: np.ndarray,
                        recon: np.ndarray, tensors: Mapping[str, torch.Tensor],
                        images: Mapping[str, np.ndarray] | None = None, seed_only: np.ndarray | None = None,
                        **extra: Any) -> dict[str, Any]:
        """Write ``latents/<id>.safetensors`` (``tensors``: ``z_0``, ``z_T``, the seed's further parts,
        ...) and the images ``query``, ``recon``, ``seed_only`` (uint8 ``[H, W, 3]``; None: the same as
        ``recon``) and ``images``; return the ``ok`` record: ``psnr`` = PSNR(query, recon) and
        ``psnr_seed_only`` = PSNR(query, seed_only) on uint8, ``nll`` the joint NLL of the seed parts
        (:attr:`seed_parts` found in ``tensors``) with ``seed_dim`` values, ``nll_parts`` per part when
        there are several, ``extra`` fields. A seed with non-finite values (a diverged inversion)
        gives the item's ``error`` record instead, and nothing is written."""
        z_t = tensors["z_T"]
        parts = [p for p in self.seed_parts if p in tensors]
        vec = self.seed_vector(tensors, parts)
        if not bool(torch.isfinite(vec).all()):  # a diverged inversion is no seed: an error, retried on resume
            return self.error_record(item_id, set_name, prompt, source,
                                     f"the {self.spec.method} inversion diverged: its seed has non-finite values "
                                     "(NaN or Inf); try another method, fewer steps or fp32", **extra)
        self.rd.write_latents(item_id, tensors)
        self.rd.write_image(item_id, "query", query)
        self.rd.write_image(item_id, "recon", recon)
        if seed_only is not None:
            self.rd.write_image(item_id, "seed_only", seed_only)
        for kind, img in (images or {}).items():
            self.rd.write_image(item_id, kind, img)
        psnr = metrics.psnr(query, recon)
        rec = {"item_id": item_id, "set": set_name, "prompt": prompt, "source": source,
               "status": "ok", "error": None, "psnr": psnr,
               "psnr_seed_only": psnr if seed_only is None else metrics.psnr(query, seed_only),
               "nll": float(metrics.nll(vec[None])[0]), "seed_dim": int(vec.numel()), "z_shape": list(z_t.shape),
               "latents": f"latents/{item_id}.safetensors", "query": f"images/{item_id}.query.png",
               "recon": f"images/{item_id}.recon.png"}
        if seed_only is not None:
            rec["seed_only"] = f"images/{item_id}.seed_only.png"
        if len(parts) > 1:
            rec["nll_parts"] = {p: float(metrics.nll(tensors[p][None])[0]) for p in parts}
        rec.update(extra)
        return rec

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
        """Number of values of a seed, all its parts together (``seed_dim`` of the first ``ok`` record;
        records written before it: the size of ``z_shape``)."""
        for r in results.values():
            if r.get("status") == "ok":
                if isinstance(r.get("seed_dim"), int):
                    return int(r["seed_dim"])
                if r.get("z_shape"):
                    return int(np.prod(r["z_shape"]))
        return None

    def loaded_image_size(self) -> int | None:
        """The image size a process of this run loaded the model at (``progress`` event
        ``stage="loaded"``; a sharded run's holder loads no model), else None."""
        sizes = [e.get("image_size") for e in self.rd.read_all_events() if e.get("stage") == "loaded"]
        return next((int(v) for v in reversed(sizes) if isinstance(v, int)), None)

    def session_fields(self) -> dict[str, Any]:
        return {"device": self.device, "precision": self.spec.precision, "batch_size": self.batch_size,
                "image_size": self.size or self.spec.image_size or self.loaded_image_size(), "seed": self.spec.seed,
                "inversion": (self.config or inversion_config(self.spec)).to_dict(),
                "method_seed": method_seed(self.spec.method)}
