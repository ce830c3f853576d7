"""EDICT, exact inversion with coupled transformations (Wallace et al., CVPR 2023; numerics in
:mod:`memtui.engine.inversion.edict`): two coupled latents ``x``, ``y`` invert in closed form, and the
reconstruction samples both back with EDICT itself (the seed is the pair ``z_T = x_T``, ``y_T``).
Inversion and reconstruction use the same noise prediction: the prompt at the config's guidance.
Encodes the posterior mean by default."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memtui.engine.core.options import option
from memtui.engine.inversion.base import InversionMethod, Inverted, MethodOptions, Progress, numerics
from memtui.engine.inversion.registry import register

if TYPE_CHECKING:
    import torch

    from memtui.engine.model.pipeline import SDPipeline

__all__ = ["EDICTOptions", "EDICTInversion"]


@dataclass
class EDICTOptions(MethodOptions):
    """EDICT settings: the mixing weight and the official code's step alternation."""

    p: float = option(0.93, help="mixing weight of the coupling layer, in [0.5, 1] (paper 0.93); p > 0 "
                      "is needed as the inversion divides by p, and 0.5 is the lower bound chosen here "
                      "(below it a latent keeps less of itself than of the other, and inversion rounding "
                      "errors grow fast)", minimum=0.5, maximum=1.0, flag="--edict-p")
    leapfrog: bool = option(False, help="alternate which latent is updated first on every other step, as "
                            "the official code does (off: the paper's equations, x first at every step)",
                            flag="--edict-leapfrog")


@register
class EDICTInversion(InversionMethod):
    """EDICT: coupled DDIM inversion of two latents with a mixing layer of weight ``p``, exact in
    closed form; reconstructs by EDICT sampling of the pair at the config's guidance; encodes the mean."""

    name = "edict"
    summary = "EDICT exact inversion (coupled latents x, y with mixing weight p)"
    Options = EDICTOptions
    default_encode = "mean"
    seed_parts = ("z_T", "y_T")
    seed_note = ("z_T is EDICT's first latent x_T and y_T its second, coupled latent; the reconstruction "
                 "samples the pair (x_T, y_T) back with EDICT and takes x_0 (generation from noise starts "
                 "from x_T = y_T)")

    def phases(self, steps: int, options: Any) -> tuple[int, ...]:
        """EDICT inversion, then EDICT reconstruction: ``steps`` each (two noise predictions a step)."""
        return (steps, steps)

    def invert(self, pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int, options: Any,
               generators: Sequence[torch.Generator], guidance: float,
               progress: Progress | None = None) -> Inverted:
        edict_invert = numerics("memtui.engine.inversion.edict:edict_invert")

        x_T, y_T = edict_invert(pipe, z0, emb, steps, p=options.p, guidance=guidance, progress=progress,
                                leapfrog=options.leapfrog)
        return Inverted(z_T=x_T, guidance=guidance, state={"y_T": y_T})

    def reconstruct(self, pipe: SDPipeline, inv: Inverted, emb: torch.Tensor, steps: int, options: Any,
                    progress: Progress | None = None) -> torch.Tensor:
        """EDICT sampling from ``(inv.z_T, inv.state["y_T"])`` at ``inv.guidance``; returns ``x_0``."""
        edict_sample = numerics("memtui.engine.inversion.edict:edict_sample")

        x_0, _ = edict_sample(pipe, inv.z_T, inv.state["y_T"], emb, steps, p=options.p, guidance=inv.guidance,
                              progress=progress, leapfrog=options.leapfrog)
        return x_0
