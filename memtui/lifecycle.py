"""A run's life from the console: resume, restart, duplicate with changes, delete, and the
``memtui --batch`` command that does the same from a shell. Each refuses with a
:class:`LifecycleError` in words (a running run is never restarted or deleted); the run itself
always executes through ``memtui --batch`` in its own session (:func:`memtui.jobs.spawn_run`)."""
from __future__ import annotations

import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memtui.engine.runs.spec import DERIVED_FIELDS

from . import jobs, launch

__all__ = ["LifecycleError", "resumable", "resume", "restart", "delete_plan", "delete",
           "shell_command", "duplicate_form"]

RESUMABLE = ("cancelled", "failed", "incomplete", "new")


class LifecycleError(Exception):
    """Why an action cannot be done to a run (shown to the user as it is)."""


def _info(run_dir: Path) -> jobs.RunInfo:
    info = jobs.read_run(Path(run_dir))
    if info.status == jobs.BROKEN:
        raise LifecycleError(f"{info.name} cannot be read: {info.problem}")
    return info


def _not_live(info: jobs.RunInfo, what: str) -> None:
    if info.live:
        raise LifecycleError(f"{info.name} is running: cancel it (x) before you {what} it")


def resumable(run_dir: Path) -> bool:
    """Whether :func:`resume` would start the run (cancelled, failed, incomplete or never started)."""
    try:
        return _info(run_dir).status in RESUMABLE
    except LifecycleError:
        return False


def resume(run_dir: Path) -> None:
    """Continue a cancelled, failed or incomplete run from its stored spec (finished items are kept)."""
    info = _info(run_dir)
    _not_live(info, "resume")
    if info.status not in RESUMABLE:
        raise LifecycleError(f"{info.name} is {info.status}: nothing to resume (restart computes it again)")
    spec = Path(run_dir) / "spec.json"
    if not spec.is_file():
        raise LifecycleError(f"{info.name} has no spec.json to resume from")
    jobs.spawn_run(spec, Path(run_dir))


def restart(run_dir: Path) -> Path:
    """Start the run over with its stored spec; ``memtui --batch --restart`` moves the old contents
    to ``RUN_DIR/.old-<timestamp>/``. The spec is copied beside the runs folder's launch specs first
    (the run's own spec.json moves with the old contents). Returns the spec file used."""
    info = _info(run_dir)
    _not_live(info, "restart")
    if not info.spec:
        raise LifecycleError(f"{info.name} has no spec.json to restart from")
    spec = {k: v for k, v in info.spec.items() if v is not None and k not in DERIVED_FIELDS}
    spec_file = launch.write_spec(spec, Path(run_dir).parent, f"{info.name}.restart")
    jobs.spawn_run(spec_file, Path(run_dir), extra=("--restart",))
    return spec_file


def delete_plan(run_dir: Path) -> str:
    """What :func:`delete` would remove, in words (files and bytes); refuses a running run."""
    info = _info(run_dir)
    _not_live(info, "delete")
    files = [p for p in Path(run_dir).rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    top = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(run_dir).iterdir())
    shown = ", ".join(top[:6]) + (f", … ({len(top) - 6} more)" if len(top) > 6 else "")
    return f"{run_dir}: {len(files)} files, {_size(size)} ({shown})"


def delete(run_dir: Path) -> None:
    """Remove the run directory (refused while the run is alive, or when it is no run directory)."""
    run_dir = Path(run_dir)
    if not jobs.is_run_dir(run_dir) or not run_dir.is_dir():
        raise LifecycleError(f"{run_dir} is not a run directory")
    _not_live(_info(run_dir), "delete")
    shutil.rmtree(run_dir)


def shell_command(run_dir: Path, extra: Sequence[str] = ()) -> str:
    """The ``memtui --batch`` command that resumes (or, with ``--restart``, restarts) the run."""
    spec = Path(run_dir) / "spec.json"
    return shlex.join(["memtui", "--batch", "--spec", str(spec), "--out", str(run_dir), *extra])


def duplicate_form(run_dir: Path) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """The New-run form filled from the run's spec: ``(field texts, analysis-option texts, the
    spec's other fields)``; the third is carried into the new spec unchanged (seed, image size,
    the inversion table, …). The name is left for the form to choose."""
    info = _info(run_dir)
    spec = {k: v for k, v in info.spec.items() if k not in DERIVED_FIELDS}
    if not spec:
        raise LifecycleError(f"{info.name} has no spec.json to duplicate")
    fields = ("base", "ablated", "erased", "reference", "analysis", "method", "precision", "steps", "batch_size",
              "lora_scale")
    values = {k: str(spec[k]) for k in fields if spec.get(k) is not None}  # missing: the form's default
    in_form = {info.name for info in launch.option_fields(str(spec.get("analysis", "concept")))}
    stored = {k: v for k, v in (spec.get("options") or {}).items() if v is not None}
    options = {k: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
               for k, v in stored.items() if k in in_form}
    carry = {k: v for k, v in spec.items() if k not in fields and k != "options" and v is not None}
    rest = {k: v for k, v in stored.items() if k not in in_form}  # e.g. detectors: not form fields
    if rest:
        carry["options"] = rest
    return values, options, carry


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
