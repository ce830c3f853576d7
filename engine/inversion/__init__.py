"""Diffusion inversion and reconstruction over batches: DDIM, ReNoise (official configuration) and
null-text inversion (paper and official modes), plus the one-call API used by the run layer."""
from __future__ import annotations

from memtui.engine.inversion.api import InversionConfig, InversionOutput, decode, invert_images, invert_latents
from memtui.engine.inversion.ddim import (ddim_invert, ddim_move, ddim_sample, ddim_trajectory, ddim_trajectory_t1, empty_embedding,
                   guided_eps)
from memtui.engine.inversion.nti import NTIResult, nti_invert
from memtui.engine.inversion.renoise import (RenoiseConfig, autocorr_loss, draw_rolls, patch_kl, regularize, renoise_invert,
                      renoise_step)

__all__ = [
    "InversionConfig", "InversionOutput", "invert_images", "invert_latents", "decode",
    "ddim_invert", "ddim_sample", "ddim_move", "ddim_trajectory", "ddim_trajectory_t1", "empty_embedding",
    "guided_eps", "NTIResult", "nti_invert", "RenoiseConfig", "renoise_invert", "regularize", "patch_kl",
    "autocorr_loss", "draw_rolls", "renoise_step",
]
