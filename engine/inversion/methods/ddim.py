"""Plain DDIM inversion: ``steps`` deterministic inverse steps with the conditional embedding (no
CFG), then DDIM reconstruction with the config's guidance. Encodes the posterior mean by default.

``eval_at`` says where each step reads the network: at the step's target timestep (``target``, the
paper's and the official code's DDIM inversion) or at the level the step starts from (``current``:
the explicit Euler step of the probability-flow ODE; for a flow-matching model such as Flux exactly
the plain Euler step ``x_t = x_prev + (σ_t − σ_prev)·v(x_prev, σ_prev)`` of the flow ODE)."""
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

__all__ = ["DDIMOptions", "DDIMInversion", "EVAL_AT"]

EVAL_AT = ("target", "current")


@dataclass
class DDIMOptions(MethodOptions):
    """Where each inverse step evaluates the network."""

    eval_at: str = option("target", help="evaluate the network at each inverse step's target timestep (target: "
                          "the paper's DDIM inversion) or at the level it starts from (current: explicit Euler; "
                          "for Flux the plain Euler step of the flow ODE)", choices=EVAL_AT, flag="--ddim-eval-at")


@register
class DDIMInversion(InversionMethod):
    """Plain DDIM inversion: ``steps`` inverse steps with the conditional embedding (no CFG), then
    DDIM reconstruction at the config's guidance; encodes the posterior mean by default."""

    name = "ddim"
    summary = "plain DDIM inversion (conditional, no CFG)"
    Options = DDIMOptions
    default_encode = "mean"

    def invert(self, pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int, options: Any,
               generators: Sequence[torch.Generator], guidance: float,
               progress: Progress | None = None) -> Inverted:
        ddim_invert = numerics("memtui.engine.inversion.ddim:ddim_invert")

        z_T = ddim_invert(pipe, z0, emb, steps, progress=progress, eval_at=options.eval_at)
        return Inverted(z_T=z_T, guidance=guidance)
