"""How to invert: :class:`InversionConfig` (the fields every method shares plus the chosen
method's options object) and its dict form in run specs, ``summary.json`` and events. Torch-free.

Dict form (``to_dict``)::

    {"method": "nti", "steps": 50, "seed": 42, "encode": "auto", "guidance": 1.0,
     "nti": {"mode": "paper", "guidance": 7.5, "inner_steps": null, ...}}

``from_dict`` also reads the keys written before the registry: ``renoise`` (a table of ReNoise knobs,
which is also its canonical form) and the flat ``nti_mode``, ``nti_guidance``, ``nti_inner_steps``
(mapped onto the NTI options ``mode``, ``guidance``, ``inner_steps``). Options of a method other
than ``method`` are validated and then dropped (they have no effect).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from memtui.engine.core.options import option, problems as option_problems
from memtui.engine.inversion.registry import DEFAULT_METHOD, get_method, method_names

__all__ = ["InversionConfig", "CommonOptions", "ENCODES", "LEGACY_NTI_KEYS", "inversion_problems"]

ENCODES = ("mean", "sample", "auto")
LEGACY_NTI_KEYS = {"nti_mode": "mode", "nti_guidance": "guidance", "nti_inner_steps": "inner_steps"}
_NTI = "nti"


@dataclass
class CommonOptions:
    """The common fields as declared options (validation and messages come from the declaration)."""

    method: str = option(DEFAULT_METHOD, help="inversion method", flag=None)
    steps: int = option(50, help="DDIM steps (50: timesteps 981..1)", minimum=2, maximum=1000, flag=None)
    seed: int = option(42, help="seed of each item's CPU generator (the official code re-seeds 42 per image)",
                       minimum=0, flag=None)
    encode: str = option("auto", help="VAE encoding: posterior mean, a posterior sample, or the method's "
                         "default (auto)", choices=ENCODES, flag=None)
    guidance: float = option(1.0, help="classifier-free guidance of the reconstruction (official 1.0); "
                             "methods with their own reconstruction (nti) ignore it", flag=None)
    embedded_guidance: float | None = option(
        None, help="distilled guidance fed to a guidance-distilled model (FLUX.1-dev's guidance embedding) "
        "in every inversion and reconstruction call; unset: the model's own default (3.5 for FLUX.1-dev); "
        "models without one (SD, FLUX.1-schnell) ignore it", minimum=0, flag="--embedded-guidance")


COMMON = tuple(f.name for f in fields(CommonOptions))


@dataclass
class InversionConfig:
    """How to invert: ``method`` (a registered name); ``steps`` DDIM steps (50 → timesteps 981..1);
    ``seed`` seeds one CPU generator per item (``Generator("cpu").manual_seed(seed)``: the official
    code re-seeds 42 for every image); ``encode`` mean | sample | auto (the method's default: sample
    for renoise, as official, mean otherwise); ``guidance``: reconstruction CFG (official 1.0; NTI
    reconstructs with its own); ``embedded_guidance``: a guidance-distilled model's guidance input
    (None: the model's default); ``options``: the method's options dataclass (None → its defaults)."""

    method: str = DEFAULT_METHOD
    steps: int = 50
    seed: int = 42
    encode: str = "auto"
    guidance: float = 1.0
    embedded_guidance: float | None = None
    options: Any = None

    def __post_init__(self) -> None:
        if self.options is None and self.method in method_names():
            self.options = get_method(self.method).Options()

    @property
    def resolved_encode(self) -> str:
        """``"mean"`` or ``"sample"`` after resolving ``"auto"`` with the method's default."""
        return self.encode if self.encode != "auto" else get_method(self.method).default_encode

    def validate(self) -> None:
        """ValueError naming every bad field or option."""
        probs = option_problems(CommonOptions, {k: getattr(self, k) for k in COMMON})
        if not probs:
            cls = get_method(self.method).Options
            if not isinstance(self.options, cls):
                probs.append(f"options of method {self.method} must be a {cls.__name__}, "
                             f"got {type(self.options).__name__}")
            else:
                probs += option_problems(cls, self.options.to_dict(), f"{self.method}.")
        if probs:
            raise ValueError("; ".join(probs))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``from_dict(to_dict())`` gives an equal config)."""
        d: dict[str, Any] = {k: getattr(self, k) for k in COMMON}
        d[self.method] = self.options.to_dict()
        return d

    # ------------------------------------------------------------------ dict form
    @classmethod
    def problems(cls, d: Any) -> list[str]:
        """Every problem with dict ``d`` as an inversion config, in words (``[]`` when valid)."""
        return cls._parse(d)[1]

    @classmethod
    def from_dict(cls, d: Any) -> "InversionConfig":
        """Build from a dict (a run spec's ``[inversion]`` table plus ``method``/``steps``/``seed``,
        canonical or legacy keys); unknown keys or bad values raise ValueError naming them."""
        cfg, probs = cls._parse(d)
        if probs:
            raise ValueError("; ".join(probs))
        assert cfg is not None
        return cfg

    @classmethod
    def _parse(cls, d: Any) -> tuple["InversionConfig | None", list[str]]:
        if not isinstance(d, Mapping):
            return None, [f"inversion config must be a mapping, got {type(d).__name__}"]
        names = method_names()
        known = (*COMMON, *names, *LEGACY_NTI_KEYS)
        unknown = sorted(k for k in d if k not in known)
        probs = [f"unknown inversion option(s): {', '.join(unknown)}; known: {', '.join(known)}"] if unknown else []
        common = {k: d[k] for k in COMMON if k in d}
        probs += option_problems(CommonOptions, common)
        method = common.get("method", DEFAULT_METHOD)
        if isinstance(method, str) and method not in names:
            probs.append(f"method must be one of {', '.join(names)}, got {method!r}")
        legacy = {LEGACY_NTI_KEYS[k]: d[k] for k in LEGACY_NTI_KEYS if k in d}
        sections: dict[str, tuple[Any, str]] = {n: (d[n], f"{n}.") for n in names if n in d}
        if legacy and _NTI in names:
            if _NTI in sections:
                probs.append(f"give the NTI options either as {_NTI} = {{...}} or as the legacy keys "
                             f"{', '.join(k for k in LEGACY_NTI_KEYS if k in d)}, not both")
            else:
                sections[_NTI] = (legacy, "nti_")
        built: dict[str, Any] = {}
        for name, (data, prefix) in sections.items():
            ocls = get_method(name).Options
            if not isinstance(data, Mapping):
                probs.append(f"{name} must be a table of {name} options, got {data!r}")
                continue
            p = ocls.problems(data, prefix)
            probs += p
            if not p:
                built[name] = ocls.from_dict(data)
        if probs:
            return None, probs
        kw = dict(common)
        for key in ("guidance", "embedded_guidance"):
            if isinstance(kw.get(key), int) and not isinstance(kw.get(key), bool):
                kw[key] = float(kw[key])
        kw["options"] = built.get(method)
        return cls(**kw), []


def inversion_problems(method: str, inversion: Mapping[str, Any] | None) -> list[str]:
    """Every problem, in words, with a spec's ``method`` and its ``[inversion]`` table (``[]`` when
    valid): unknown keys, bad values of the common fields and of each method's options (canonical
    ``{<method>: {...}}`` tables and the legacy ``renoise`` / ``nti_*`` keys). Torch-free."""
    if inversion is not None and not isinstance(inversion, Mapping):
        return [f"inversion must be a table of settings, got {inversion!r}"]
    return InversionConfig.problems({"method": method, **dict(inversion or {})})
