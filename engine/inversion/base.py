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
    """A method's result and how to reconstruct from it: seeds ``z_T [B, C, h, w]``; ``state``: the
    seed's further parts, each ``[B, C, h, w]`` under the names of the method's ``seed_parts`` after
    ``z_T`` (EDICT's second latent ``y_T``, BDIA's second state); the reconstruction's CFG scale
    ``guidance``, its per-step unconditional embeddings ``null_embs [n, B, L, D]`` (None: the empty
    prompt), ``stop_at_t1`` (stop at the t=1 latent); ``extras``: further tensors to hand back in
    :class:`~memtui.engine.inversion.api.InversionOutput`."""

    z_T: torch.Tensor
    guidance: float = 1.0
    null_embs: torch.Tensor | None = None
    stop_at_t1: bool = False
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)


class InversionMethod:
    """One inversion method. Subclass, set ``name``, ``Options`` and ``summary``, implement
    :meth:`invert`, and decorate with ``@register`` in a module of ``memtui.engine.inversion.methods``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""                 # one line for --help, the docs table and the console
    Options: ClassVar[type[MethodOptions]] = MethodOptions
    default_encode: ClassVar[str] = "mean"      # what encode = "auto" means: "mean" or "sample"
    # What the method calls its seed: ``z_T`` first, then the keys of ``Inverted.state`` (each a
    # latent-shaped tensor). The seed's NLL is the joint one under N(0, I) of all parts together.
    seed_parts: ClassVar[tuple[str, ...]] = ("z_T",)
    # In words: what the seed is, and what the method's own reconstruction uses besides it
    # (``spec.json`` / ``summary.json`` say it; empty: "z_T alone").
    seed_note: ClassVar[str] = ""
    # Dimension of the batch in each of the method's ``extras`` laid out ``[n, B, ...]`` (others: 0).
    extras_batch_dim: ClassVar[dict[str, int]] = {}

    def phases(self, steps: int, options: Any) -> tuple[int, ...]:
        """Diffusion steps counted by each progress phase of one call, the reconstruction last
        (default: ``steps`` inversion steps, then ``steps`` reconstruction steps)."""
        return (steps, steps)

    def after_sample_encode(self, generators: Sequence[torch.Generator], shape: tuple[int, ...]) -> None:
        """Called after a posterior-sample encoding drew from each item's generator (default: nothing);
        a method reproducing an official draw order consumes its unused draws here."""

    def reconstruct(self, pipe: SDPipeline, inv: Inverted, emb: torch.Tensor, steps: int, options: Any,
                    progress: Progress | None = None) -> torch.Tensor:
        """The method's own reconstruction: scaled clean latents ``[B, C, h, w]`` from ``inv`` with
        embeddings ``emb [B, L, D]``. Default: DDIM sampling from ``inv.z_T`` following the recipe
        (``guidance``, ``null_embs``, ``stop_at_t1``). A method with more state overrides this."""
        ddim_sample = numerics("memtui.engine.diffusion.ddim:ddim_sample")

        return ddim_sample(pipe, inv.z_T, emb, steps, guidance=inv.guidance, null_embs=inv.null_embs,
                           progress=progress, stop_at_t1=inv.stop_at_t1)

    @classmethod
    def reconstructs_from_seed_alone(cls, inv: Inverted, guidance: float) -> bool:
        """Whether the method's reconstruction of ``inv`` *is* plain DDIM from ``z_T`` with the
        prompt at ``guidance`` (then the seed-only reconstruction is not computed again)."""
        return (cls.reconstruct is InversionMethod.reconstruct and not inv.state and inv.null_embs is None
                and not inv.stop_at_t1 and float(inv.guidance) == float(guidance))

    @classmethod
    def seed_only_separate(cls, options: Any) -> bool:
        """Whether the seed-only reconstruction (plain DDIM from ``z_T`` alone) differs from the
        method's own, so it costs ``steps`` more UNet calls (default: when the method overrides
        :meth:`reconstruct` or its seed has more parts than ``z_T``)."""
        return cls.reconstruct is not InversionMethod.reconstruct or len(cls.seed_parts) > 1

    @classmethod
    def seed_info(cls) -> dict[str, Any]:
        """What the method calls its seed, JSON-ready: ``parts`` (tensor names, ``z_T`` first), ``note``
        (in words) and ``seed_only`` (how ``psnr_seed_only`` reconstructs)."""
        return {"method": cls.name, "parts": list(cls.seed_parts), "note": cls.seed_note or "z_T alone",
                "seed_only": "DDIM sampling from z_T alone with the prompt at the reconstruction guidance "
                             "(empty-prompt unconditional branch), no other state"}

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
