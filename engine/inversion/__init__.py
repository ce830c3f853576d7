"""Diffusion inversion and reconstruction over batches: the method registry (DDIM, ReNoise in the
official configuration, null-text inversion in paper and official modes; one module each under
``methods/``), the one-call API used by the run layer, and VAE decoder inversion (``decoder``).

Torch-free at import: the names below are loaded on first use, so ``registry.method_names()`` and
option validation never import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InversionConfig": "config", "InversionOutput": "api", "invert_images": "api", "invert_latents": "api",
    "decode": "api", "method_names": "registry", "inversion_problems": "config", "DEFAULT_METHOD": "registry",
    "get_method": "registry", "register": "registry", "InversionMethod": "base", "Inverted": "base",
    "ddim_invert": "ddim", "ddim_trajectory": "ddim", "ddim_trajectory_t1": "ddim",
    "NTIResult": "nti", "nti_invert": "nti", "NTIOptions": "methods.nti", "DDIMOptions": "methods.ddim",
    "RenoiseOptions": "methods.renoise", "RenoiseConfig": "methods.renoise", "renoise_invert": "renoise",
    "regularize": "renoise", "patch_kl": "renoise", "autocorr_loss": "renoise", "draw_rolls": "renoise",
    "renoise_step": "renoise",
    # the shared DDIM sampler and guidance helpers (memtui.engine.diffusion), re-exported for callers
    "ddim_sample": "memtui.engine.diffusion.ddim", "ddim_step": "memtui.engine.diffusion.ddim",
    "empty_embedding": "memtui.engine.diffusion.guidance", "guided_eps": "memtui.engine.diffusion.guidance",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    target = module if module.startswith("memtui.") else f"{__name__}.{module}"
    return getattr(importlib.import_module(target), name)
