"""From the New-run form to a running run: the form's values → a spec dict, validation with
problems stated in words, the spec file, and the subprocess (``memtui.jobs.spawn_run``)."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import tomli_w

from memtui.engine import analyses
from memtui.engine.core.options import OptionInfo, parse_text
from memtui.engine.runs.spec import PRECISIONS, method_names

from . import catalog, jobs
from .demo_world import demo_available, demo_data_dir, demo_defaults

__all__ = ["analysis_names", "method_names", "PRECISIONS", "option_fields", "spec_from_form", "validate",
           "launch", "next_run_name", "demo_defaults"]


def analysis_names() -> tuple[str, ...]:
    """The analyses a run can be started with (the registry's, follow-ups excluded)."""
    return analyses.main_names()


def option_fields(analysis: str) -> list[OptionInfo]:
    """The New-run form's option fields of ``analysis``: its declared options."""
    try:
        return analyses.get(analysis).option_infos()
    except ValueError:
        return []

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def next_run_name(runs_dir: Path, analysis: str, method: str) -> str:
    """``<analysis>-<method>-NNN``, the first number not taken in ``runs_dir``."""
    i = 1
    while (Path(runs_dir) / f"{analysis}-{method}-{i:03d}").exists():
        i += 1
    return f"{analysis}-{method}-{i:03d}"


def spec_from_form(values: dict[str, str], options: dict[str, str] | None = None) -> dict[str, Any]:
    """The spec dict (keys of ``memtui --batch``) from the form's text values and the analysis'
    option fields (``options``: option name -> text); empty optional fields are left out; numbers
    stay strings when they don't parse (validation reports them)."""
    spec: dict[str, Any] = {"analysis": values.get("analysis", "concept") or "concept"}
    for key in ("base", "ablated", "erased", "reference"):
        v = (values.get(key) or "").strip()
        if v:
            spec[key] = v
    spec["method"] = values.get("method", "ddim") or "ddim"
    for key in ("steps", "batch_size"):
        v = (values.get(key) or "").strip()
        if v:
            spec[key] = int(v) if v.isdigit() else v
    v = (values.get("lora_scale") or "").strip()
    if v:  # the weight of a LoRA ablated adapter (spec default 1)
        try:
            spec["lora_scale"] = float(v)
        except ValueError:
            spec["lora_scale"] = v
    spec["precision"] = values.get("precision", "fp32") or "fp32"
    opts = {}
    for info in option_fields(spec["analysis"]):
        v = parse_text(info, (options or {}).get(info.name, ""))
        if v is not None:
            opts[info.name] = v
    if opts:
        spec["options"] = opts
    return spec


def _is_model_path(value: str, cached: set[str] | None) -> bool:
    return Path(value).expanduser().exists() or (cached is not None and value in cached)


def validate(spec: dict[str, Any], name: str, runs_dir: Path, detect: bool = True) -> list[str]:
    """Everything wrong with ``spec`` before launching, as sentences (empty list = launchable).
    Checks: run name, required fields, paths exist (a base may be a cached HF id), the checkpoint
    kinds are detected (``detect``), the datasets' layouts are recognised, numbers are positive
    integers, and the runs engine accepts the spec."""
    problems: list[str] = []
    if not name or not NAME_RE.match(name):
        problems.append("The run name must start with a letter or digit and use only letters, "
                        "digits, '.', '_' and '-'.")
    elif (Path(runs_dir) / name).exists():
        problems.append(f"A run named {name!r} already exists in {runs_dir}; choose another name "
                        "(or open that run to see or resume it).")
    cached: set[str] | None = None
    base = spec.get("base")
    if not base:
        problems.append("Choose a base model: a diffusers pipeline folder or a model id in the "
                        "local Hugging Face cache.")
    else:
        if not Path(base).expanduser().exists():
            cached = catalog.cached_repo_ids()
        if not _is_model_path(base, cached):
            problems.append(f"The base model {base!r} is neither an existing folder nor a model in "
                            "the local Hugging Face cache.")
        elif detect and Path(base).expanduser().exists():
            kind = catalog.checkpoint_kind(Path(base).expanduser())
            if kind not in ("?", "pipeline"):
                problems.append(f"The base model {base!r} is a {kind} checkpoint, not a full "
                                "pipeline folder.")
    ablated = spec.get("ablated")
    if ablated:
        p = Path(ablated).expanduser()
        if not p.exists():
            problems.append(f"The ablated checkpoint {ablated!r} does not exist.")
        elif detect:
            problem = catalog.checkpoint_problem(p)
            if problem:
                problems.append(f"memtui cannot tell what kind of checkpoint {ablated!r} is: {problem}")
    try:
        datasets = analyses.get(str(spec.get("analysis"))).datasets
    except ValueError:
        datasets = ("erased", "reference")
    roles = tuple((key, f"{key} set") for key in datasets)
    for key, label in roles:
        value = spec.get(key)
        if not value:
            problems.append(f"Choose the {label}: a dataset folder.")
            continue
        p = Path(value).expanduser()
        if not p.is_dir():
            problems.append(f"The {label} {value!r} is not a folder.")
            continue
        try:
            from memtui.engine.data.datasets import detect_layout

            layout = detect_layout(p)
        except ValueError as exc:
            problems.append(f"The {label} is not usable: {exc}")
            continue
        if not catalog.dataset_layout(p)[1]:
            problems.append(f"The {label} {value!r} ({layout} layout) holds no images.")
    for key, label in (("steps", "number of steps"), ("batch_size", "batch size")):
        v = spec.get(key)
        if key == "batch_size" and v == "auto":
            continue
        if v is not None and (not isinstance(v, int) or v < 1):
            extra = " or 'auto'" if key == "batch_size" else ""
            problems.append(f"The {label} must be a whole number of at least 1{extra} (got {v!r}).")
    if spec.get("analysis") not in analysis_names():
        problems.append(f"Unknown analysis {spec.get('analysis')!r}; choose one of {', '.join(analysis_names())}.")
    if spec.get("method") not in method_names():
        problems.append(f"Unknown method {spec.get('method')!r}; choose one of {', '.join(method_names())}.")
    if not problems:
        problems.extend(engine_check(spec))
    return problems


def engine_check(spec: dict[str, Any]) -> list[str]:
    """The runs engine's own problems with the spec (``RunSpec.problems()``)."""
    from memtui.engine.runs.spec import RunSpec, SpecError

    try:
        return RunSpec.from_dict(dict(spec), validate=False).problems()
    except (SpecError, TypeError) as exc:
        return [str(exc)]


def write_spec(spec: dict[str, Any], runs_dir: Path, name: str) -> Path:
    """Write the spec as TOML to ``<runs_dir>/.launch/<name>.toml`` (the run directory itself is
    left for the runner, which stores the spec it ran as ``spec.json``)."""
    folder = Path(runs_dir) / ".launch"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(spec), encoding="utf-8")
    os.replace(tmp, path)
    return path


def launch(spec: dict[str, Any], runs_dir: Path, name: str) -> Path:
    """Write the spec and start the run; returns the run directory."""
    spec_file = write_spec(spec, runs_dir, name)
    run_dir = Path(runs_dir) / name
    jobs.spawn_run(spec_file, run_dir)
    return run_dir
