"""What an analysis declares, once: its name and question, its options (a dataclass of
:func:`memtui.engine.core.options.option` fields), the datasets it reads, the keys of its records and
summary, where its computation lives, and how its results read (headline and final table).

The CLI flags and ``--help`` section, spec validation, the console's New-run form, the batch
table and the console headline are all derived from these declarations. Declaration modules are
torch-free; the computation (``compute = "module:function"``) is imported only when a run starts.
"""
from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from memtui.engine.analyses import registry as analyses
from memtui.engine.core import options as opt

__all__ = ["seed_lines", "Analysis", "CommonOptions", "TargetOptions", "Table", "num", "mean_std", "stat"]

# Record keys every analysis writes (docs/run-format.md); ``detections`` is added by detectors.
RECORD_BASE: tuple[str, ...] = ("item_id", "set", "prompt", "source", "status", "error")
# Summary keys the item loop adds to every analysis' summary.
SUMMARY_BASE: tuple[str, ...] = ("analysis", "status", "complete", "format_version", "errors")


@dataclass
class CommonOptions:
    """Options every analysis accepts in ``spec.options``."""

    concept: str | None = opt.option(None, help="the run's concept, which names it in reports and Compare "
                                     "(default: the erased folder's name)", metavar="NAME")


@dataclass
class TargetOptions(CommonOptions):
    """Options of the image-level analyses that pick target images from the erased set."""

    targets: list[int] | None = opt.option(None, help="erased-set indices of the target images "
                                           "(default: the first --num-targets)", metavar="I")
    num_targets: int | None = opt.option(None, help="number of target images (default: --max-items, else 5; "
                                         "3 with --demo for memories)", minimum=1, metavar="N")


@dataclass
class Table:
    """A final table as plain data (the batch runner and the console render it): ``columns``
    (the first left-aligned), ``rows`` of display strings, then ``notes`` (one line each)."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def num(v: Any, fmt: str = ".2f") -> str:
    """A number for display; ``n/a`` for missing, non-numeric or NaN."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, fmt)


def mean_std(d: Any, fmt: str = ".2f") -> str:
    """``mean ± std`` of a ``metrics.summarize`` dict (just the mean for a single value)."""
    if not isinstance(d, Mapping):
        return "n/a"
    if d.get("count") == 1 or not isinstance(d.get("std"), (int, float)):
        return num(d.get("mean"), fmt)
    return f"{num(d.get('mean'), fmt)} ± {num(d.get('std'), fmt)}"


def stat(summary: Mapping[str, Any], set_name: str, metric: str, key: str = "mean") -> float | None:
    """``summary["sets"][set_name][metric][key]`` as a float, or None."""
    v = ((((summary.get("sets") or {}).get(set_name) or {}).get(metric)) or {})
    v = v.get(key) if isinstance(v, Mapping) else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


class Analysis:
    """Base of every analysis declaration; subclasses set the class attributes and may override
    the class methods. Nothing is instantiated: the class is the declaration."""

    name: ClassVar[str] = ""
    question: ClassVar[str] = ""  # one line for --help, the docs table and the New-run form
    Options: ClassVar[type] = CommonOptions
    compute: ClassVar[str] = ""  # "module:function(spec, run_dir, progress=None, cancel=None) -> summary"
    datasets: ClassVar[tuple[str, ...]] = ("erased", "reference")  # spec path fields it reads
    needs_base: ClassVar[bool] = True
    switch: ClassVar[str | None] = None  # a CLI shortcut that selects this analysis (e.g. --generate)
    follow_up: ClassVar[bool] = False  # runs after the main analysis of a spec it applies to
    non_result_options: ClassVar[tuple[str, ...]] = ()  # options that do not change results
    sets: ClassVar[tuple[str, ...]] = ()
    record_keys: ClassVar[tuple[str, ...]] = RECORD_BASE
    summary_keys: ClassVar[tuple[str, ...]] = SUMMARY_BASE
    headline_sets: ClassVar[tuple[str, ...]] = ()  # sets whose mean PSNR the headline shows

    # ------------------------------------------------------------------ options
    @classmethod
    def option_infos(cls) -> list[opt.OptionInfo]:
        return opt.describe(cls.Options)

    @classmethod
    def options(cls, spec: Any) -> Any:
        """The options of ``spec`` (``spec.options`` over the defaults; demo defaults on the demo
        world) as an ``Options`` instance; ValueError naming every bad option."""
        return opt.from_dict(cls.Options, dict(spec.options or {}), demo=bool(getattr(spec, "demo", False)),
                             prefix="options.", allow=cls.allowed_foreign())

    @classmethod
    def allowed_foreign(cls) -> tuple[str, ...]:
        """``spec.options`` keys owned by others that may sit beside this analysis' options: the
        detectors list and the options of follow-up analyses."""
        keys = ["detectors"]
        for other in analyses.all_analyses():
            if other.follow_up and other is not cls:
                keys += [i.name for i in other.option_infos()]
        return tuple(keys)

    @classmethod
    def fold_flags(cls, data: dict[str, Any], given: Mapping[str, Any]) -> None:
        """Adjust the spec dict built from the command line (in place) before validation; ``given``
        are the core flags actually given. Default: nothing."""

    # ------------------------------------------------------------------ validation
    @classmethod
    def problems(cls, spec: Any) -> list[str]:
        """Every problem of ``spec`` for this analysis, in words: required paths and options."""
        out: list[str] = []
        demo = bool(getattr(spec, "demo", False))
        if cls.needs_base and not spec.base and not demo:
            out.append("base is required: a diffusers model folder or a model id in the local HF cache")
        for name in cls.datasets:
            v = getattr(spec, name)
            if not v and not demo:
                out.append(f"{name} is required: a dataset folder")
            elif v and isinstance(v, str) and not Path(os.path.expanduser(v)).is_dir():
                out.append(f"{name} folder not found: {v}")
        o = spec.options if isinstance(spec.options, dict) else {}
        own = opt.problems(cls.Options, {k: v for k, v in o.items() if k not in cls.allowed_foreign()},
                           "options.")
        out += [cls._explain_unknown(p) for p in own]
        for other in cls.follow_ups(spec):
            out += opt.problems(other.Options, {k: v for k, v in o.items()
                                                if k in {i.name for i in other.option_infos()}}, "options.")
        if o.get("detectors") is not None:
            from memtui.engine.detectors.config import detector_problems

            out += detector_problems(o["detectors"])
        return out

    @classmethod
    def _explain_unknown(cls, problem: str) -> str:
        if not problem.startswith("unknown option"):
            return problem
        names = problem.split(" ", 2)[2].split(";")[0].split(", ")
        owners = []
        for n in names:
            key = n.removeprefix("options.")
            users = [a.name for a in analyses.all_analyses() if key in {i.name for i in a.option_infos()}]
            owners.append(f"{n} (an option of {', '.join(users)})" if users else n)
        return f"options not used by the {cls.name} analysis: {', '.join(owners)}"

    @classmethod
    def follow_ups(cls, spec: Any) -> list[type["Analysis"]]:
        """Follow-up analyses that apply to ``spec`` after this one."""
        return [a for a in analyses.all_analyses() if a.follow_up and a is not cls and a.applies_after(spec)]

    @classmethod
    def applies_after(cls, spec: Any) -> bool:
        """For follow-ups: whether to run after the main analysis of ``spec``."""
        return False

    # ------------------------------------------------------------------ running
    @classmethod
    def compute_function(cls) -> Callable[..., dict[str, Any]]:
        module, func = cls.compute.split(":")
        return getattr(importlib.import_module(module), func)

    @classmethod
    def run(cls, spec: Any, run_dir: Any, progress: Any = None, cancel: Any = None) -> dict[str, Any]:
        """Run or resume ``spec`` in ``run_dir``; returns the summary."""
        return cls.compute_function()(spec, run_dir, progress=progress, cancel=cancel)

    @classmethod
    def run_after(cls, spec: Any, run_dir: Any, summary: dict[str, Any], cancel: Any = None) -> dict[str, Any]:
        """For follow-ups: add this analysis' results to a finished run's summary; returns it."""
        return summary

    @classmethod
    def after_line(cls, summary: Mapping[str, Any]) -> str | None:
        """For follow-ups: one line for stderr once it ran (None: nothing to say)."""
        return None

    # ------------------------------------------------------------------ reading
    @classmethod
    def headline(cls, summary: Mapping[str, Any]) -> str:
        """The run's key figures in one short line ('-' when none are known yet)."""
        parts = []
        for s in cls.headline_sets:
            psnr = stat(summary, s, "psnr")
            if psnr is not None:
                parts.append(f"PSNR {psnr:.2f} dB")
                seed_only = stat(summary, s, "psnr_seed_only")
                if seed_only is not None and abs(seed_only - psnr) >= 0.005:
                    parts.append(f"seed-only {seed_only:.2f} dB")
                break
        return "  ".join(parts) or "-"

    @classmethod
    def table(cls, summary: Mapping[str, Any], run_dir: str | os.PathLike[str]) -> Table:
        """The final table of a run (the batch runner prints it; the console shows it)."""
        sets = summary.get("sets") or {}
        seed_only = any(isinstance(s, Mapping) and "psnr_seed_only" in s for s in sets.values())
        t = Table(title=f"{cls.name} · {summary.get('method', '')} · {run_dir}",
                  columns=["set", "items", "ok", "errors", "PSNR dB", *(["seed-only dB"] if seed_only else []),
                           "NLL nats"])
        for name, s in sets.items():
            t.rows.append([name, str(s.get("n_items", "")), str(s.get("n_ok", "")), str(s.get("n_errors", "")),
                           mean_std(s.get("psnr")), *([mean_std(s.get("psnr_seed_only"))] if seed_only else []),
                           mean_std(s.get("nll"), ".1f")])
        t.notes += seed_lines(summary)
        return t

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """The declaration as data (docs table, tests)."""
        return {"name": cls.name, "question": cls.question, "datasets": list(cls.datasets),
                "options": [i.name for i in cls.option_infos()], "compute": cls.compute}


def seed_lines(summary: Mapping[str, Any]) -> list[str]:
    """Notes saying what the run's method calls its seed when it is more than ``z_T`` (summary.json's
    ``method_seed``) and how the seed-only PSNR reconstructs; ``[]`` for one-part seeds."""
    info = summary.get("method_seed")
    if not isinstance(info, Mapping):
        return []
    parts = [str(p) for p in info.get("parts") or []]
    out = []
    if len(parts) > 1:
        d = summary.get("d")
        out.append(f"seed = {' + '.join(parts)} (NLL joint over {d if isinstance(d, int) else '?'} values; "
                   f"{info.get('note', '')})")
    elif info.get("note") and info.get("note") != "z_T alone":
        out.append(f"seed = z_T ({info['note']})")
    if out:
        out.append("seed-only PSNR: plain DDIM from z_T alone with the prompt, no other state")
    return out


def error_lines(summary: Mapping[str, Any], run_dir: str | os.PathLike[str]) -> list[str]:
    """The note about items in error, if any."""
    errs: Sequence[Any] = summary.get("errors") or []
    return [f"{len(errs)} item(s) in error (see {Path(run_dir) / 'summary.json'})"] if errs else []


def detection_lines(summary: Mapping[str, Any]) -> list[str]:
    """Detection rates per detector and set (fractions of images flagged), if the run has any."""
    out = []
    for key, d in (summary.get("detection") or {}).items():
        for s, st in (d.get("sets") or {}).items():
            rates = ", ".join(f"{k[:-5]} {v:.3f}" for k, v in st.items() if k.endswith("_rate"))
            out.append(f"detection {key} [{d.get('rule')}] {s} (n={st.get('n')}): {rates}")
    return out
