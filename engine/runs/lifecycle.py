"""The life cycle every analysis shares: prepare and lock the run directory, run, and log how it
ended (``cancelled`` on Ctrl-C, ``failed`` with the traceback on any other error, re-raised)."""
from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from memtui.engine.runs.store import RunDir
from memtui.engine.runs.spec import RunSpec, SpecError


def run_locked(make: Callable[[RunSpec, RunDir, Any, Any], Any], spec: RunSpec,
               run_dir: RunDir | str | os.PathLike[str], progress: Any, cancel: Any) -> dict[str, Any]:
    """Prepare/lock ``run_dir``, then ``make(spec, rd, progress, cancel).run()``; returns its summary.
    Raises SpecMismatchError / RunLockedError before any work."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    rd.prepare(spec)
    rd.acquire_lock()
    try:
        return make(spec, rd, progress, cancel).run()
    except KeyboardInterrupt:
        rd.event("cancelled", reason="interrupted")
        raise
    except BaseException as e:
        rd.event("failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=20))
        raise
    finally:
        rd.release_lock()


def load_run_model(spec: RunSpec, rd: RunDir, device: str) -> tuple[Any, Any, int]:
    """Load the base pipeline (+ the ablated checkpoint) and build the inversion config of ``spec``;
    logs a ``progress`` event with the load report. Returns ``(pipe, InversionConfig, image_size_px)``.
    Raises SpecError when the image size does not fit the VAE's downsampling factor."""
    from memtui.engine.inversion.api import InversionConfig
    from memtui.engine.model.loading import load_ablated, load_base

    t = time.monotonic()
    pipe = load_base(spec.base, device=device, precision=spec.precision)
    report = load_ablated(pipe, spec.ablated).to_dict() if spec.ablated else None
    size = spec.image_size or pipe.image_size
    if size % pipe.vae_scale:
        raise SpecError(f"image_size {size} is not a multiple of the VAE's {pipe.vae_scale}")
    config = InversionConfig.from_dict({"method": spec.method, "steps": spec.steps, "seed": spec.seed,
                                        **spec.inversion})
    rd.event("progress", stage="loaded", seconds=round(time.monotonic() - t, 3), device=device,
             precision=spec.precision, image_size=size, load_report=report, inversion=config.to_dict())
    return pipe, config, size
