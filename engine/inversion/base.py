"""What an inversion method is: a class registered under a name (:func:`~memtui.engine.inversion.registry.register`)
that owns an options dataclass, its default encoding, its progress phases and its inversion; the
shared DDIM reconstruction then follows the :class:`Inverted` recipe it returns. Torch-free at import
(a method imports its numerics inside :meth:`InversionMethod.invert`), so option validation and the
method list never load torch.

Latents are scaled (``z = s·z_vae``) ``[B, C, h, w]`` float32; text embeddings ``[B, L, D]``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from memtui.engine.core import options as opts

if TYPE_CHECKING:
    import torch

    from memtui.engine.model.pipeline import SDPipeline

__all__ = ["MethodOptions", "Inverted", "InversionMethod", "Progress", "numerics"]

Progress = Callable[[int, int], None]


class MethodOptions:
    """Base of every method's options dataclass (fields made with :func:`memtui.engine.core.options.option`):
    construction from / export to a JSON dict and validation with messages naming the option."""

    @classmethod
    def problems(cls, data: Mapping[str, Any] | None, prefix: str = "") -> list[str]:
        """Every problem of ``data`` as options of this class (``[]`` when valid); names get ``prefix``."""
        return opts.problems(cls, data, prefix)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, prefix: str = "") -> Any:
        """An instance from ``data`` (missing keys take their defaults); ValueError naming each bad option."""
        if data is not None and not isinstance(data, Mapping):
            raise ValueError(f"{prefix.rstrip('.') or 'options'} must be a table of settings, got {data!r}")
        return opts.from_dict(cls, data, prefix=prefix)

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-friendly dict (tuples as lists)."""
        return opts.to_dict(self)

    def validate(self, prefix: str = "") -> None:
        """ValueError naming each option whose value is out of its declared range or choices."""
        probs = opts.problems(type(self), self.to_dict(), prefix)
        if probs:
            raise ValueError("; ".join(probs))


@dataclass
class Inverted:
    """A method's result and how to reconstruct from it: seeds ``z_T [B, C, h, w]``; the
    reconstruction's CFG scale ``guidance``, its per-step unconditional embeddings ``null_embs
    [n, B, L, D]`` (None: the empty prompt), ``stop_at_t1`` (stop at the t=1 latent); ``extras``:
    tensors to hand back in :class:`~memtui.engine.inversion.api.InversionOutput`."""

    z_T: torch.Tensor
    guidance: float = 1.0
    null_embs: torch.Tensor | None = None
    stop_at_t1: bool = False
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class InversionMethod:
    """One inversion method. Subclass, set ``name``, ``Options`` and ``summary``, implement
    :meth:`invert`, and decorate with ``@register`` in a module of ``memtui.engine.inversion.methods``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""                 # one line for --help, the docs table and the console
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    default_encode: ClassVar[str] = "mean"      # what encode = "auto" means: "mean" or "sample"

    def phases(self, steps: int, options: Any) -> tuple[int, ...]:
        """Diffusion steps counted by each progress phase of one call, the reconstruction last
        (default: ``steps`` inversion steps, then ``steps`` reconstruction steps)."""
        return (steps, steps)

    def after_sample_encode(self, generators: Sequence[torch.Generator], shape: tuple[int, ...]) -> None:
        """Called after a posterior-sample encoding drew from each item's generator (default: nothing);
        a method reproducing an official draw order consumes its unused draws here."""

    def invert(self, pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int, options: Any,
               generators: Sequence[torch.Generator], guidance: float,
               progress: Progress | None = None) -> Inverted:
        """Invert scaled latents ``z0 [B, C, h, w]`` with embeddings ``emb [B, L, D]`` over ``steps``
        DDIM steps; ``generators``: one CPU generator per item; ``guidance``: the config's
        reconstruction CFG. ``progress(done, total)`` counts steps over all phases but the last."""
        raise NotImplementedError


def numerics(path: str) -> Callable[..., Any]:
    """The function ``"module:name"`` of a method's numerics, imported when the method runs. A method
    module is a torch-free declaration; its numerics (which import torch, and may import the
    declaration's options) sit above it and are named, not imported, so the two never form a cycle."""
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)
