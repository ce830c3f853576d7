"""Fixed-point inversion (numerics in :mod:`memtui.engine.inversion.fpi`): every inverse DDIM step
solved as the implicit equation ``z_t = ddim_step(z_prev, eps(z_t, t), a_prev, a_t)`` by fixed-point
iteration from the plain DDIM guess, per item until the relative residual is below ``tolerance`` or
after ``iterations`` updates (Samuel et al.'s FPI, ``dvirsamuel/FPI``). eps is taken at the config's
reconstruction guidance, so the shared DDIM reconstruction is the exact inverse at convergence.
Encodes the posterior mean by default; the seed is ``z_T`` alone."""
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

__all__ = ["FPIOptions", "FPIInversion"]


@dataclass
class FPIOptions(MethodOptions):
    """Fixed-point inversion settings: the cap on updates per step and the stopping residual."""

    iterations: int = option(20, help="most fixed-point updates per inversion step after the DDIM guess, one "
                             "UNet pass each (0: plain DDIM inversion; the reference code runs 20)",
                             minimum=0, flag="--fpi-iterations")
    tolerance: float = option(1e-4, help="an item stops iterating a step once RMS(z_new - z) / RMS(z) is below "
                              "this (0: always take every iteration; fp16/bf16 models' rounding floor is near "
                              "1e-4..1e-3, raise it there)", minimum=0, flag="--fpi-tolerance")


@register
class FPIInversion(InversionMethod):
    """Fixed-point inversion: per step, the DDIM guess refined by ``z ← ddim_step(z_prev, eps(z, t))``
    until converged (relative residual below ``tolerance``) or after ``iterations`` updates, eps at
    the config's guidance; DDIM reconstruction at that guidance; encodes the mean."""

    name = "fpi"
    summary = "fixed-point inversion: each inverse DDIM step iterated to convergence"
    Options = FPIOptions
    default_encode = "mean"
    seed_parts = ("z_T",)
    seed_note = ("z_T alone, the latent reached by solving every inverse DDIM step as a fixed point "
                 "at the reconstruction guidance; the reconstruction is plain DDIM from it")
    extras_batch_dim = {"fpi_iterations": 1, "fpi_residuals": 1}  # each [steps, B]

    def phases(self, steps: int, options: Any) -> tuple[int, ...]:
        """Inversion (one tick per timestep, whatever the iterations), then reconstruction."""
        return (steps, steps)

    def invert(self, pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int, options: Any,
               generators: Sequence[torch.Generator], guidance: float,
               progress: Progress | None = None) -> Inverted:
        fpi_invert = numerics("memtui.engine.inversion.fpi:fpi_invert")

        res = fpi_invert(pipe, z0, emb, steps, iterations=options.iterations, tolerance=options.tolerance,
                         guidance=guidance, progress=progress)
        extras = {"fpi_iterations": res.iterations.float(), "fpi_residuals": res.residuals}
        return Inverted(z_T=res.z_T, guidance=guidance, extras=extras)
