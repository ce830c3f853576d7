"""Plain DDIM inversion: ``steps`` deterministic inverse steps with the conditional embedding (no
CFG), then DDIM reconstruction with the config's guidance. Encodes the posterior mean by default."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memtui.engine.inversion.base import InversionMethod, Inverted, MethodOptions, Progress, numerics
from memtui.engine.inversion.registry import register

if TYPE_CHECKING:
    import torch

    from memtui.engine.model.pipeline import SDPipeline

__all__ = ["DDIMOptions", "DDIMInversion"]


@dataclass
class DDIMOptions(MethodOptions):
    """DDIM inversion has no options of its own."""


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

        return Inverted(z_T=ddim_invert(pipe, z0, emb, steps, progress=progress), guidance=guidance)
