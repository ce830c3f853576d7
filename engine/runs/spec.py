"""What a run computes: :class:`RunSpec`, read from TOML / JSON / a run directory, validated, and
fingerprinted so a resumed run can be checked against the stored one.

Fields that do not change results (``batch_size``, ``device``, ``shards``, ``compile``) and cosmetic differences in paths
(relative vs absolute, symlinks, trailing slashes) are left out of :meth:`RunSpec.fingerprint`:
resuming with another batch size or on another device is allowed.

This module imports neither torch nor the console (the console reads specs cheaply).
"""
from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from memtui.engine import analyses
from memtui.engine.inversion.config import InversionConfig, inversion_problems
from memtui.engine.inversion.registry import DEFAULT_METHOD, get_method, method_names

PRECISIONS = ("fp32", "fp16", "bf16")
NORMALS = ("exact", "samples")
EMD_METRICS = ("w2", "w1")
RESAMPLES = ("bicubic", "bilinear", "lanczos", "nearest", "box", "hamming")
ALPHAS = ("white", "drop")
PATH_FIELDS = ("base", "ablated", "erased", "reference")
NON_RESULT_FIELDS = ("batch_size", "device", "shards", "compile")
AUTO_BATCH = "auto"  # batch_size: chosen from free accelerator memory (engine.model.speed.auto_batch_size)
DEFAULT_BATCH = 8  # what "auto" means where no memory probe runs (CPU, MPS) and before the model loads
MAX_SHARDS = 64  # writer processes of one run on one host
DERIVED_FIELDS = ("method_seed",)  # written into spec.json for readers, ignored when a spec is read
MIN_STEPS, MAX_STEPS = 2, 1000  # DDIM inversion needs two timesteps; the scheduler has 1000
MAX_SEED = 2 ** 63 - 1  # torch.Generator.manual_seed's range
_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")

__all__ = ["RunSpec", "SpecError", "SpecMismatchError", "PRECISIONS", "method_names"]


class SpecError(ValueError):
    """A spec that is malformed or inconsistent; the message lists every problem."""


class SpecMismatchError(SpecError):
    """The spec given for an existing run differs from the stored one in result-changing fields.

    ``differences`` maps each field to ``(stored, given)``."""

    def __init__(self, run_dir: str | os.PathLike[str], differences: dict[str, tuple[Any, Any]]) -> None:
        self.run_dir = str(run_dir)
        self.differences = differences
        lines = [f"  {k}: stored {v[0]!r}, given {v[1]!r}" for k, v in differences.items()]
        super().__init__(
            f"run directory {self.run_dir} holds a different spec:\n" + "\n".join(lines)
            + "\nUse the stored spec (omit those options), another --out, or --restart to start over.")


class ModelChangedError(SpecMismatchError):
    """The model files of an existing run are not the ones it was started with (same paths, other
    weights). ``differences`` maps ``base`` / ``ablated`` to ``(stored, now)`` identities."""

    def __init__(self, run_dir: str | os.PathLike[str], differences: dict[str, tuple[Any, Any]]) -> None:
        self.run_dir = str(run_dir)
        self.differences = differences
        lines = [f"  {k}: started with {v[0].get('files')} weight file(s), {v[0].get('bytes')} bytes, "
                 f"digest {v[0].get('digest')}; now {v[1].get('files')} file(s), {v[1].get('bytes')} bytes, "
                 f"digest {v[1].get('digest')}" for k, v in differences.items()]
        SpecError.__init__(
            self, f"run directory {self.run_dir} was started with other model weights at the same paths:\n"
            + "\n".join(lines) + "\nResuming would mix records of two models: use another --out, or "
            "--restart to start over with the current weights.")


def _norm_path(value: str | None) -> str | None:
    """A path's canonical form (absolute, symlinks resolved) when it exists, else the text as given
    (a cached model id such as ``CompVis/stable-diffusion-v1-4`` stays as it is)."""
    if value is None or value == "":
        return value
    p = Path(os.path.expanduser(value))
    return str(p.resolve()) if p.exists() else value


@dataclass
class RunSpec:
    """One run's settings. Paths are strings (local folders/files, or a model id in the local HF
    cache for ``base``). ``batch_size`` ``"auto"`` = chosen from free accelerator memory once the
model is loaded (:data:`DEFAULT_BATCH` on the CPU); ``compile``: ``torch.compile`` the UNet (CUDA;
slow first batches of each shape). ``image_size`` None = the model's native size; ``num_reference`` None =
    as many reference items as erased items; ``max_items`` caps each set (None = all)."""

    analysis: str = "concept"
    base: str = ""
    ablated: str | None = None
    lora_scale: float = 1.0
    lora_fuse: bool = True
    erased: str | None = None
    reference: str | None = None
    method: str = DEFAULT_METHOD
    steps: int = 50
    batch_size: int | str = AUTO_BATCH
    shards: int = 1
    precision: str = "fp32"
    device: str = "auto"
    compile: bool = False
    seed: int = 42
    image_size: int | None = None
    resample: str = "bicubic"
    alpha: str = "white"
    max_items: int | None = None
    num_reference: int | None = None
    normal: str = "exact"
    normal_samples: int = 50
    emd_metric: str = "w2"
    inversion: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    demo: bool = False

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON/TOML-friendly dict (None values kept for JSON)."""
        return asdict(self)

    def derived(self) -> dict[str, Any]:
        """What spec.json says beside the fields (ignored when read back): ``method_seed``, what the
        method calls its seed (:meth:`~memtui.engine.inversion.base.InversionMethod.seed_info`)."""
        try:
            return {"method_seed": get_method(self.method).seed_info()}
        except ValueError:
            return {}

    def initial_batch_size(self) -> int:
        """The batch size a run starts with: ``batch_size``, or :data:`DEFAULT_BATCH` for ``"auto"``
        (the item loop replaces it with the probed size once the model is loaded)."""
        return DEFAULT_BATCH if self.batch_size == AUTO_BATCH else max(1, int(self.batch_size))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any], validate: bool = True) -> "RunSpec":
        """Build from a dict; unknown keys are an error (typos must not be ignored silently)."""
        if not isinstance(data, dict):
            raise SpecError(f"a spec must be a table/object, got {type(data).__name__}")
        names = set(cls.field_names())
        data = {k: v for k, v in data.items() if k not in DERIVED_FIELDS}
        unknown = sorted(k for k in data if k not in names)
        if unknown:
            raise SpecError(f"unknown spec field(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        spec = cls(**{k: v for k, v in data.items()})
        if spec.inversion is None or isinstance(spec.inversion, Mapping):
            spec.inversion = dict(spec.inversion or {})  # else left as given: validation reports it
        if spec.options is None or isinstance(spec.options, Mapping):
            spec.options = dict(spec.options or {})
        return spec.validate() if validate else spec

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], validate: bool = True) -> "RunSpec":
        return cls.from_dict(read_spec_file(path), validate=validate)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], validate: bool = True) -> "RunSpec":
        """From a ``.toml`` file, a ``.json`` file, or a run directory (its ``spec.json``)."""
        return cls.from_dict(read_spec_file(path), validate=validate)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[str]:
        """Every problem with this spec, in words ([] when valid)."""
        out: list[str] = []

        def choice(name: str, allowed: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in allowed:
                out.append(f"{name} must be one of {', '.join(allowed)}, got {v!r}")

        def positive_int(name: str, optional: bool = False) -> None:
            v = getattr(self, name)
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                out.append(f"{name} must be a positive integer{' or unset' if optional else ''}, got {v!r}")

        main = analyses.main_names()
        if self.analysis not in main:
            out.append(f"analysis must be one of {', '.join(main)}, got {self.analysis!r}")
        choice("method", method_names())
        choice("precision", PRECISIONS)
        choice("normal", NORMALS)
        choice("emd_metric", EMD_METRICS)
        choice("resample", RESAMPLES)
        choice("alpha", ALPHAS)
        bs = self.batch_size
        if bs != AUTO_BATCH and (isinstance(bs, bool) or not isinstance(bs, int) or bs < 1):
            out.append(f"batch_size must be a positive integer or {AUTO_BATCH!r}, got {bs!r}")
        for name in ("normal_samples", "shards"):
            positive_int(name)
        if isinstance(self.shards, int) and self.shards > MAX_SHARDS:
            out.append(f"shards must be at most {MAX_SHARDS}, got {self.shards}")
        for name in ("image_size", "max_items", "num_reference"):
            positive_int(name, optional=True)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not MIN_STEPS <= self.steps <= MAX_STEPS:
            out.append(f"steps must be an integer from {MIN_STEPS} to {MAX_STEPS} (inversion needs at least "
                       f"{MIN_STEPS}), got {self.steps!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            out.append(f"seed must be an integer, got {self.seed!r}")
        elif not 0 <= self.seed <= MAX_SEED:
            out.append(f"seed must be from 0 to 2**63-1, got {self.seed!r}")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            out.append(f"device must be auto, cpu, mps, cuda or cuda:N (also xpu[:N]); got {self.device!r}")
        for name in ("inversion", "options"):
            if not isinstance(getattr(self, name), dict):
                out.append(f"{name} must be a table of settings, got {getattr(self, name)!r}")
        ls = self.lora_scale
        if isinstance(ls, bool) or not isinstance(ls, (int, float)) or not math.isfinite(ls):
            out.append(f"lora_scale must be a finite number (a LoRA adapter's weight; 1 = as trained), got {ls!r}")
        for name in ("demo", "compile", "lora_fuse"):
            if not isinstance(getattr(self, name), bool):
                out.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in PATH_FIELDS:
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                out.append(f"{name} must be a path string, got {v!r}")
        if self.ablated and isinstance(self.ablated, str) and not Path(os.path.expanduser(self.ablated)).exists():
            out += _cached_checkpoint_problems(self.ablated)
        if self.method in method_names() and isinstance(self.inversion, dict):
            out += inversion_problems(self.method, self.inversion)
        if self.analysis in main and isinstance(self.options, dict):
            out += analyses.get(self.analysis).problems(self)
        return out

    def validate(self) -> "RunSpec":
        """Return self, or raise :class:`SpecError` listing every problem."""
        probs = self.problems()
        if probs:
            raise SpecError("invalid spec:\n" + "\n".join(f"  - {p}" for p in probs))
        return self

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> dict[str, Any]:
        """The fields that change results, with paths and the inversion settings in canonical form
        (``nti_mode = "official"`` and ``[inversion.nti] mode = "official"`` are the same run)."""
        d = self.to_dict()
        d["inversion"] = _canonical_inversion(self.method, self.steps, self.seed, d.get("inversion"))
        for k in NON_RESULT_FIELDS:
            d.pop(k, None)
        for k in PATH_FIELDS:
            d[k] = _norm_path(d[k])
        if isinstance(d.get("options"), dict):
            # detectors only add scores of finished items, follow-ups add their own part: naming or
            # changing them on resume is allowed
            skip = non_result_options()
            d["options"] = {k: v for k, v in d["options"].items() if k not in skip}
        return d

    def default_fingerprint(self) -> dict[str, Any]:
        """The fingerprint of a spec with this one's analysis and method and every other field at
        its default (what a setting added after a run started is compared with on resume)."""
        return type(self)(analysis=self.analysis, method=self.method).fingerprint()

    def differences(self, other: "RunSpec") -> dict[str, tuple[Any, Any]]:
        """Result-changing fields where ``self`` (stored) and ``other`` (given) differ."""
        a, b = self.fingerprint(), other.fingerprint()
        diff = {k: (getattr(self, k), getattr(other, k)) for k in a if a[k] != b.get(k)}
        if "method" in diff and "inversion" in diff and self.inversion == other.inversion:
            del diff["inversion"]  # the same table read for another method: the method is the difference
        return diff

    def resolved_paths(self) -> "RunSpec":
        """A copy with existing paths made absolute (stored in spec.json so a run can be resumed
        from another working directory)."""
        d = self.to_dict()
        for k in PATH_FIELDS:
            d[k] = _norm_path(d[k])
        return RunSpec.from_dict(d, validate=False)


def _canonical_inversion(method: Any, steps: Any, seed: Any, inversion: Any) -> Any:
    """The complete inversion settings (defaults filled, legacy keys mapped) without the fields the
    spec holds itself; the table as given when it is not valid (validation reports it)."""
    try:
        full = InversionConfig.from_dict({"method": method, "steps": steps, "seed": seed, **dict(inversion or {})})
    except (ValueError, TypeError):
        return inversion
    return {k: v for k, v in full.to_dict().items() if k not in ("method", "steps", "seed")}


def non_result_options() -> set[str]:
    """``spec.options`` keys that do not change a run's results (left out of the fingerprint)."""
    out = {"detectors"}
    for a in analyses.all_analyses():
        out.update(a.non_result_options)
    return out


def read_spec_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw dict of a spec file: TOML (``.toml``), JSON, or a run directory's ``spec.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / "spec.json"
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read spec file {str(p)!r}: {e.strerror or e}") from e
    try:
        if p.suffix.lower() == ".toml":
            return tomllib.loads(raw.decode("utf-8"))
        data = json.loads(raw)
    except (tomllib.TOMLDecodeError, ValueError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot parse spec file {str(p)!r}: {e}") from e
    if not isinstance(data, dict):
        raise SpecError(f"spec file {str(p)!r} must hold an object")
    return data


def _cached_checkpoint_problems(source: str) -> list[str]:
    """[] when ``source`` is a repo id (with optional subfolder) in the local HF cache, else one
    problem line. Imports the loader (and torch) only for names that are not local paths."""
    if "/" not in source or source.startswith((".", "/", "~")):
        return [f"ablated checkpoint not found: {source}"]
    from memtui.engine.model.loading.base import resolve_checkpoint_path
    from memtui.engine.model.loading.errors import ModelNotFoundError

    try:
        resolve_checkpoint_path(source)
    except ModelNotFoundError as exc:
        return [f"ablated checkpoint not found: {exc}"]
    return []
