"""Loading what a run computes with: the base pipeline, the ablated checkpoint on top of it, and the
inversion config of the spec. (The lock / events / cancel life cycle is :mod:`memtui.engine.runs.loop`.)"""
from __future__ import annotations

import time
from typing import Any

from memtui.engine.runs.spec import RunSpec, SpecError
from memtui.engine.runs.store import RunDir

__all__ = ["load_pipeline", "load_run_model", "inversion_config", "preflight_problems", "device_problem"]


def load_pipeline(spec: RunSpec, device: str, base: str | None = None) -> tuple[Any, dict[str, Any] | None]:
    """The base pipeline (``base``, default ``spec.base``) at ``spec.precision`` on ``device``, with
    ``spec.ablated`` loaded into it when set. Returns ``(pipe, load report dict or None)``."""
    from memtui.engine.model.loading import load_ablated, load_base

    pipe = load_base(base or spec.base, device=device, precision=spec.precision)
    report = (load_ablated(pipe, spec.ablated, lora_scale=float(spec.lora_scale), lora_fuse=bool(spec.lora_fuse)).to_dict()
              if spec.ablated else None)
    return pipe, report


def load_run_model(spec: RunSpec, rd: RunDir, device: str) -> tuple[Any, Any, int]:
    """Load the base pipeline (+ the ablated checkpoint) and build the inversion config of ``spec``;
    logs a ``progress`` event with the load report, the distilled guidance of a guidance-distilled
    model (``embedded_guidance``; a ``message`` when one is set for a model without it) and the
    speed settings applied (channels_last
    where safe, VAE calls of :data:`~memtui.engine.model.speed.VAE_CHUNK` images; ``torch.compile``
    is left to the caller, after any batch-size probe). Returns ``(pipe, InversionConfig,
    image_size_px)``. Raises SpecError when the image size does not fit the VAE's downsampling factor."""
    from memtui.engine.model.speed import VAE_CHUNK, apply_speed_settings

    t = time.monotonic()
    pipe, report = load_pipeline(spec, device)
    pipe.vae_chunk = VAE_CHUNK
    speed = apply_speed_settings(pipe)
    size = spec.image_size or pipe.image_size
    if size % pipe.size_multiple:
        raise SpecError(f"image_size {size} is not a multiple of {pipe.size_multiple} (the model's latent grid)")
    pipe.use_image_size(size)  # Flux shifts its σ grid with the image's token count
    config = inversion_config(spec)
    distilled = pipe.use_embedded_guidance(config.embedded_guidance)
    note = ({"message": f"embedded_guidance {config.embedded_guidance:g} ignored: the {pipe.family} base "
                        "has no guidance embedding"} if config.embedded_guidance is not None and not distilled else {})
    rd.event("progress", stage="loaded", seconds=round(time.monotonic() - t, 3), device=device,
             precision=spec.precision, family=pipe.family, image_size=size, load_report=report,
             embedded_guidance=getattr(pipe, "embedded_guidance", None) if distilled else None,
             inversion=config.to_dict(),
             speed={**speed, "vae_chunk": pipe.vae_chunk}, **note)
    return pipe, config, size


def inversion_config(spec: RunSpec) -> Any:
    """The :class:`~memtui.engine.inversion.config.InversionConfig` of ``spec`` (method, steps, seed
    and the ``[inversion]`` table)."""
    from memtui.engine.inversion.config import InversionConfig

    return InversionConfig.from_dict({"method": spec.method, "steps": spec.steps, "seed": spec.seed,
                                      **spec.inversion})


def device_problem(device: str) -> str | None:
    """Why ``device`` (auto, cpu, cuda, cuda:N, mps, ...) cannot be used on this host, or None."""
    import torch

    if device in ("auto", "cpu"):
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        return f"device {device!r} is not a device name ({exc})"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return f"device {device!r}: CUDA is not available on this host (use --device cpu or auto)"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"device {device!r}: this host has {torch.cuda.device_count()} CUDA device(s)"
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            return f"device {device!r}: MPS is not available on this host (use --device cpu or auto)"
    elif dev.type == "xpu":
        xpu = getattr(torch, "xpu", None)
        if xpu is None or not xpu.is_available():
            return f"device {device!r}: XPU is not available on this host (use --device cpu or auto)"
    return None


def preflight_problems(spec: RunSpec) -> list[str]:
    """What would make ``spec`` fail at load time, found cheaply before anything is written: the
    device is not available, the base pipeline folder or the ablated checkpoint holds empty, truncated
    or unreadable files. A base that cannot be found is left to the run (it records the failure)."""
    from memtui.engine.model.loading import (LoadingError, checkpoint_problems, pipeline_problems,
                                             resolve_checkpoint_path, resolve_pipeline_dir)

    out: list[str] = []
    problem = device_problem(spec.device)
    if problem:
        out.append(problem)
    if spec.base:
        try:
            out += pipeline_problems(resolve_pipeline_dir(spec.base))
        except LoadingError:
            pass
    if spec.ablated:
        try:
            out += checkpoint_problems(resolve_checkpoint_path(spec.ablated))
        except LoadingError:
            pass
    return out
