"""Options declared once: a dataclass whose fields are made with :func:`option` carries, per field,
its default, help text, choices, bounds and CLI flag. From that one declaration come validation
(:func:`problems`), construction from a spec's dict (:func:`from_dict`), argparse flags
(:func:`add_arguments` / :func:`given_flags`) and the console's form fields (:func:`describe`).

Inversion methods and analyses both declare their settings this way. Torch-free.

Example::

    @dataclass
    class Options:
        vae_steps: int = option(3000, help="Adam steps of each decoder inversion", minimum=0)
        sib_path: str = option("reencode", help="...", choices=("reencode", "direct"))
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["option", "OptionInfo", "describe", "problems", "from_dict", "to_dict", "add_arguments",
           "given_flags", "parse_text", "flag_dest", "UNSET"]

_NONE = type(None)


class _Unset:
    """No demo default declared."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class OptionInfo:
    """One declared option. ``kind`` is ``int``, ``float``, ``str`` or ``bool``; ``many`` is the
    number of values for a list (``"+"``) or fixed tuple (an int), None for a scalar; ``optional``:
    None is allowed (and means "the default rule", described in ``help``)."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    flag: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False
    many: str | int | None = None
    metavar: str | None = None
    demo_default: Any = UNSET

    @property
    def dest(self) -> str:
        return self.name


def option(default: Any, *, help: str, choices: Sequence[Any] | None = None, flag: str | None = "",
           minimum: float | None = None, maximum: float | None = None, metavar: str | None = None,
           demo: Any = UNSET) -> Any:
    """A dataclass field declaring one option. ``flag`` "" (default) derives ``--name-with-dashes``;
    None declares no CLI flag. ``demo``: the default on the built-in demo world, if different."""
    meta = {"memtui_option": {"help": help, "choices": tuple(choices) if choices is not None else None,
                              "flag": flag, "minimum": minimum, "maximum": maximum, "metavar": metavar,
                              "demo_default": demo}}
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _resolve(tp: Any) -> tuple[type, bool, str | int | None]:
    """(element kind, optional, many) of an annotation such as ``int | None`` or ``list[float]``."""
    optional = False
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not _NONE]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) != 1:
            raise TypeError(f"unsupported option type {tp!r}")
        tp = args[0]
        origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        kind = args[0]
        many: str | int = "+" if origin is list or (len(args) == 2 and args[1] is Ellipsis) else len(args)
        return kind, optional, many
    return tp, optional, None


def describe(cls: type) -> list[OptionInfo]:
    """The declared options of dataclass ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("memtui_option")
        if meta is None:
            continue
        kind, optional, many = _resolve(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = meta["flag"]
        if flag == "":
            flag = "--" + f.name.replace("_", "-")
        out.append(OptionInfo(name=f.name, kind=kind, default=default, help=meta["help"], choices=meta["choices"],
                              flag=flag, minimum=meta["minimum"], maximum=meta["maximum"], optional=optional,
                              many=many, metavar=meta["metavar"], demo_default=meta["demo_default"]))
    return out


def _scalar_problem(info: OptionInfo, v: Any, label: str) -> str | None:
    kind = info.kind
    if kind is bool:
        ok = isinstance(v, bool)
    elif kind is int:
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif kind is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    else:
        ok = isinstance(v, kind)
    if not ok:
        return f"{label} must be {_kind_word(kind)}, got {v!r}"
    if info.choices is not None and v not in info.choices:
        return f"{label} must be one of {', '.join(map(str, info.choices))}, got {v!r}"
    if info.minimum is not None and v < info.minimum:
        return f"{label} must be >= {info.minimum:g}, got {v!r}"
    if info.maximum is not None and v > info.maximum:
        return f"{label} must be <= {info.maximum:g}, got {v!r}"
    return None


def _kind_word(kind: type) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, kind.__name__)


def problems(cls: type, data: Mapping[str, Any] | None, prefix: str = "", allow: Iterable[str] = ()) -> list[str]:
    """Every problem with ``data`` as options of ``cls``, in words ([] when valid). Unknown keys are
    problems (except names in ``allow``); ``prefix`` is put before each name (e.g. ``options.``)."""
    if data is None:
        return []
    if not isinstance(data, Mapping):
        return [f"{prefix.rstrip('.') or 'options'} must be a table of settings, got {data!r}"]
    infos = {i.name: i for i in describe(cls)}
    out = []
    unknown = sorted(k for k in data if k not in infos and k not in set(allow))
    if unknown:
        out.append(f"unknown option(s) {', '.join(prefix + k for k in unknown)}; known: "
                   f"{', '.join(infos) or 'none'}")
    for name, v in data.items():
        info = infos.get(name)
        if info is None or (v is None and (info.optional or info.default is None)):
            continue
        label = prefix + name
        if info.many is not None:
            if not isinstance(v, (list, tuple)) or isinstance(v, str):
                out.append(f"{label} must be a list of {_kind_word(info.kind).split(' ', 1)[-1]}s, got {v!r}")
                continue
            if isinstance(info.many, int) and len(v) != info.many:
                out.append(f"{label} must have {info.many} values, got {len(v)}")
                continue
            if info.many == "+" and not v:
                out.append(f"{label} must not be empty")
                continue
            msgs = [m for m in (_scalar_problem(info, x, f"{label}[{i}]") for i, x in enumerate(v)) if m]
            out += msgs[:1]
        else:
            msg = _scalar_problem(info, v, label)
            if msg:
                out.append(msg)
    return out


def from_dict(cls: type, data: Mapping[str, Any] | None, demo: bool = False, prefix: str = "",
              allow: Iterable[str] = ()) -> Any:
    """An instance of ``cls`` from ``data`` (missing keys take their default, or with ``demo`` their
    demo default); ValueError listing every problem. Numbers given as ints become floats where the
    option is a float; lists become tuples where the field is a fixed tuple."""
    probs = problems(cls, data, prefix, allow)
    if probs:
        raise ValueError("; ".join(probs))
    kw: dict[str, Any] = {}
    for info in describe(cls):
        if data is not None and info.name in data:
            v = data[info.name]
        elif demo and info.demo_default is not UNSET:
            v = info.demo_default
        else:
            continue
        if v is not None and info.kind is float:
            v = [float(x) for x in v] if info.many is not None else float(v)
        if v is not None and isinstance(info.many, int):
            v = tuple(v)
        elif v is not None and info.many == "+":
            v = list(v)
        kw[info.name] = v
    return cls(**kw)


def to_dict(obj: Any) -> dict[str, Any]:
    """The declared options of ``obj`` as a JSON-friendly dict (tuples as lists)."""
    out = {}
    for info in describe(type(obj)):
        v = getattr(obj, info.name)
        out[info.name] = list(v) if isinstance(v, tuple) else v
    return out


def add_arguments(group: Any, cls: type, skip: Iterable[str] = (), only: Iterable[str] | None = None,
                  note: Callable[[OptionInfo], str] | None = None) -> list[OptionInfo]:
    """Add one argparse argument per option of ``cls`` that declares a flag, except flags in
    ``skip`` (and, with ``only``, options not named there); ``note(info)`` is appended to a help
    text. Defaults are None so that only flags actually given override a spec file. Returns the
    options added."""
    skip, only = set(skip), (set(only) if only is not None else None)
    added = []
    for info in describe(cls):
        if not info.flag or info.flag in skip or (only is not None and info.name not in only):
            continue
        kw: dict[str, Any] = {"dest": flag_dest(info.flag), "default": None,
                              "help": _help_text(info) + (note(info) if note else "")}
        if info.kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = info.kind
            if info.many is not None:
                kw["nargs"] = info.many
            if info.choices is not None:
                kw["choices"] = info.choices
            else:
                kw["metavar"] = info.metavar or info.kind.__name__.upper()
        group.add_argument(info.flag, **kw)
        added.append(info)
    return added


def flag_dest(flag: str) -> str:
    """The argparse dest of ``--some-flag`` (``some_flag``)."""
    return flag.lstrip("-").replace("-", "_")


def _help_text(info: OptionInfo) -> str:
    text = info.help
    if info.default is not None and "default" not in text:
        d = info.default
        text += f" (default {', '.join(map(str, d)) if isinstance(d, (list, tuple)) else d}"
        if info.demo_default is not UNSET:
            text += f"; {info.demo_default} with --demo"
        text += ")"
    return text.replace("%", "%%")


def given_flags(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of ``cls`` whose flags were given in ``args`` (name -> value)."""
    out = {}
    for info in describe(cls):
        if info.flag:
            v = getattr(args, flag_dest(info.flag), None)
            if v is not None:
                out[info.name] = list(v) if isinstance(v, tuple) else v
    return out


def parse_text(info: OptionInfo, text: str) -> Any:
    """A form field's text as a value of ``info`` ("" -> None; numbers that do not parse stay text
    so validation can name them)."""
    text = text.strip()
    if text == "":
        return None
    def one(t: str) -> Any:
        try:
            if info.kind is bool:
                return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}[t.lower()]
            return info.kind(t) if info.kind in (int, float) else t
        except (ValueError, KeyError):
            return t
    if info.many is not None:
        return [one(t) for t in text.replace(",", " ").split()]
    return one(text)
