"""The life cycle every analysis shares: prepare and lock the run directory, run, and log how it
ended (``cancelled`` on Ctrl-C, ``failed`` with the traceback on any other error, re-raised)."""
from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import Any

from ..runstore import RunDir
from ..spec import RunSpec


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
