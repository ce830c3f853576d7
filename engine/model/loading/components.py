"""Reading a diffusers pipeline folder's components offline: one component at a time with its
failures named, the fp16 weight variant, the scheduler config, and cheap checks of the files.
Used by every model family's loader (:mod:`memtui.engine.model.families`)."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

from memtui.engine.model.loading.errors import CorruptCheckpointError, LoadingError, ModelNotFoundError
from memtui.engine.model.loading.safeload import DIFFUSERS_WEIGHTS, folder_weight_files, is_weight_file, weight_file_problem

__all__ = ["load_component", "weights_variant", "scheduler_config", "component_problems", "require_components"]


def weights_variant(folder: Path) -> str | None:
    """``"fp16"`` when the folder's diffusers weights are the fp16 variant (``*.fp16.safetensors``)."""
    files = folder_weight_files(folder, DIFFUSERS_WEIGHTS)
    return "fp16" if files and ".fp16." in files[0].name else None


def load_component(folder: Path, load: Callable[[Path], Any]) -> Any:
    """``load(folder)``, any failure but a LoadingError raised as :class:`CorruptCheckpointError`
    naming the folder (a damaged config, weight or tokenizer file)."""
    try:
        return load(folder)
    except LoadingError:
        raise
    except Exception as exc:  # noqa: BLE001 - libraries raise OSError, ValueError, JSON and Rust errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CorruptCheckpointError(f"{folder}: cannot load this component ({type(exc).__name__}: {first})") from None


def scheduler_config(root: Path) -> dict[str, Any]:
    """``scheduler/scheduler_config.json`` without its ``_`` keys ({} when absent)."""
    f = root / "scheduler" / "scheduler_config.json"
    cfg = json.loads(f.read_text()) if f.is_file() else {}
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def require_components(root: Path, components: Iterable[str]) -> None:
    """:class:`ModelNotFoundError` naming the component folders ``root`` lacks; then
    :class:`CorruptCheckpointError` listing :func:`component_problems`."""
    missing = [c for c in components if not (root / c).is_dir()]
    if missing:
        raise ModelNotFoundError(f"{root}: the pipeline folder lacks {', '.join(c + '/' for c in missing)}")
    problems = component_problems(root, components)
    if problems:
        raise CorruptCheckpointError("; ".join(problems))


def component_problems(root: str | Path, components: Iterable[str]) -> list[str]:
    """Cheap checks of a pipeline folder's component files (no weights are read): empty files and
    unreadable or truncated weight files, one line each; [] when none is found."""
    out: list[str] = []
    for comp in components:
        folder = Path(root) / comp
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if not f.is_file():
                continue
            problem = weight_file_problem(f) if is_weight_file(f) else (
                f"{f}: the file is empty" if f.stat().st_size == 0 else None)
            if problem:
                out.append(problem)
    return out
