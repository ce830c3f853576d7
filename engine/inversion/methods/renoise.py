"""ReNoise inversion as configured by the official code (spec §0.3; numerics in
:mod:`memtui.engine.inversion.renoise`). Encodes a posterior sample by default, keeping the
official draw order (the sample, two unused ``randn`` of the img2img pipeline, then the rolls)."""
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

__all__ = ["RenoiseOptions", "RenoiseConfig", "RenoiseInversion"]


@dataclass
class RenoiseOptions(MethodOptions):
    """ReNoise knobs with the official run's values (``RunConfig`` + the drivers' overrides)."""

    num_renoise_steps: int = option(5, help="K: re-noising iterations per step (official default 9, "
                                    "overridden to 5)", minimum=0, flag=None)
    max_num_renoise_steps_first_step: int = option(5, help="K is capped to this for t < first_step_max_timestep",
                                                   minimum=0, flag=None)
    first_step_max_timestep: int = option(250, help='the "first steps" are t below this', minimum=0, flag=None)
    average_latent_estimations: bool = option(True, help="average the noise estimates of the first steps",
                                              flag=None)
    average_first_step_range: tuple[int, int] = option((0, 5), help="iterates [lo, hi) averaged for "
                                                       "t < first_step_max_timestep", minimum=0, flag=None)
    average_step_range: tuple[int, int] = option((8, 10), help="iterates [lo, hi) averaged for later steps "
                                                 "(never reached with K = 5)", minimum=0, flag=None)
    noise_regularization: bool = option(True, help="pix2pix-zero noise regularisation (KL + auto-correlation)",
                                        flag=None)
    lambda_kl: float = option(0.065, help="weight of the KL patch term", minimum=0, flag=None)
    lambda_ac: float = option(20.0, help="weight of the auto-correlation term", minimum=0, flag=None)
    num_reg_steps: int = option(4, help="outer regularisation steps", minimum=0, flag=None)
    num_ac_rolls: int = option(5, help="auto-correlation rolls per outer step", minimum=0, flag=None)
    kl_grad_clip: float = option(100.0, help="clip of the KL gradient", minimum=0, flag=None)
    kl_patch_size: int = option(4, help="side of the KL patches (pixels)", minimum=2, flag=None)


RenoiseConfig = RenoiseOptions  # the name used before the method registry


@register
class RenoiseInversion(InversionMethod):
    """ReNoise as configured by the official code (spec §0.3): fixed-point re-noising with averaged,
    regularised noise estimates below t = 250; encodes a posterior sample by default (official draw order)."""

    name = "renoise"
    summary = "ReNoise, the official configuration (the paper's default)"
    Options = RenoiseOptions
    default_encode = "sample"

    def after_sample_encode(self, generators: Sequence[torch.Generator], shape: tuple[int, ...]) -> None:
        """The img2img ``prepare_latents`` noise and the pipe's ``noise``: two unused draws per item."""
        import torch

        for g in generators:
            for _ in range(2):
                torch.randn(shape, generator=g, dtype=torch.float32)

    def invert(self, pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int, options: Any,
               generators: Sequence[torch.Generator], guidance: float,
               progress: Progress | None = None) -> Inverted:
        renoise_invert = numerics("memtui.engine.inversion.renoise:renoise_invert")

        z_T = renoise_invert(pipe, z0, emb, steps, options, list(generators), progress=progress)
        return Inverted(z_T=z_T, guidance=guidance)
