"""Text-to-image sampling with a chosen diffusers scheduler, batched with one seed per row.

This is the official dataset generation (spec §3.2) made batchable: initial noise for each row is
drawn on the CPU from its own ``torch.Generator().manual_seed(seed)`` (the same numbers as the
official ``torch.manual_seed(seed)`` + ``torch.randn``), scaled by ``init_noise_sigma``; classifier-
free guidance with the empty prompt as the unconditional text; each row may carry its own guidance
scale. Rows of one batch share size, scheduler and step count, so a batch gives the same images as
one call per row (up to float rounding of batched kernels).

Samplers are built from the model's noise schedule (``beta_*``, ``num_train_timesteps``,
``trained_betas``; always with ``prediction_type="epsilon"``, since ``SDPipeline.eps`` converts a
v-prediction model's output to ε) with each scheduler's own defaults for everything else, as
the official code builds ``LMSDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
beta_schedule="scaled_linear", num_train_timesteps=1000)``.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported when sampling runs, so the sampler table is cheap to read
    import numpy as np
    import torch

    from memtui.engine.model.pipeline import SDPipeline

# sampler name -> diffusers scheduler class name (resolved lazily); extra constructor options
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "lms": ("LMSDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True, "steps_offset": 1}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),  # flow-matching models (Flux): FluxPipeline's sampler
}
FLOW_SAMPLERS = frozenset({"flow_euler"})  # step a velocity, not an ε-prediction
DEFAULT_SAMPLER = "lms"   # SD 1.x's (the official generation); each model family declares its own
AUTO_SAMPLER = "auto"     # the option value meaning "the base's family default"
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5


def make_sampler(name: str, scheduler_config: dict[str, Any] | None = None) -> Any:
    """A fresh diffusers scheduler for sampler ``name`` (one of :data:`SAMPLERS`) with the noise
    schedule of ``scheduler_config`` (a pipeline's scheduler config); ValueError for unknown names."""
    import diffusers

    from memtui.engine.model.schedule import noise_schedule

    key = sampler_key(name)
    cls_name, extra = SAMPLERS[key]
    if key in FLOW_SAMPLERS:  # the flow schedule's own keys (shift, dynamic shifting)
        from memtui.engine.model.families.flux import FLOW_SCHEDULER_KEYS

        flow = {k: v for k, v in (scheduler_config or {}).items() if k in FLOW_SCHEDULER_KEYS}
        return getattr(diffusers, cls_name)(**flow, **extra)
    cfg: dict[str, Any] = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                           "beta_schedule": "scaled_linear"}
    cfg.update(noise_schedule(scheduler_config))  # the noise schedule only: steps_offset etc. stay the sampler's
    return getattr(diffusers, cls_name)(**cfg, **extra)


def sampler_key(name: str) -> str:
    """The :data:`SAMPLERS` key of ``name`` (case and ``-``/``_`` free); ValueError for unknown names."""
    key = name.lower().replace("-", "_")
    if key not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return key


def prepare_sampler(pipe: "SDPipeline", name: str, steps: int, height: int, width: int) -> Any:
    """A scheduler for sampler ``name`` with its timesteps set for ``steps`` steps at ``height × width``
    pixels. A flow-matching model (``pipe.is_flow``) takes a flow sampler and the others an ε one
    (ValueError naming the ones that fit); a flow sampler's timesteps are the model's own
    (``pipe.timestep_kwargs``: Flux's σ from 1 and its resolution-dependent shift)."""
    flow_model, key = pipe.is_flow, sampler_key(name)
    if (key in FLOW_SAMPLERS) != flow_model:
        fit = sorted(FLOW_SAMPLERS) if flow_model else [k for k in SAMPLERS if k not in FLOW_SAMPLERS]
        what = "a flow-matching model (it predicts a velocity)" if flow_model else "a noise-prediction model"
        raise ValueError(f"sampler {name!r} does not fit {what} of family {pipe.family}; use {', '.join(fit)}")
    scheduler = make_sampler(key, pipe.scheduler_config)
    if flow_model:
        scheduler.set_timesteps(**pipe.timestep_kwargs(steps, height, width))
    else:
        scheduler.set_timesteps(steps)
    return scheduler


def sample(pipe: "SDPipeline", prompts: Sequence[str], seeds: Sequence[int],
           guidance: float | Sequence[float] = DEFAULT_GUIDANCE, sampler: str = DEFAULT_SAMPLER,
           steps: int = DEFAULT_STEPS, height: int | None = None, width: int | None = None,
           negative_prompt: str = "", noise: Any = None, generators: Sequence[Any] | None = None) -> "np.ndarray":
    """Generate one image per row -> uint8 ``[B, H, W, 3]``.

    ``prompts``/``seeds`` (and ``guidance`` if a sequence) have one entry per row; ``height`` and
    ``width`` default to the model's native size and must be multiples of the VAE scale. Guidance
    ``g`` mixes ``eps_u + g (eps_c − eps_u)``; ``g <= 1`` is still computed with both branches
    (as the official code does), so results do not depend on the value's range.

    Initial noise: by default each row's CPU generator seeded ``seeds[i]`` draws it, then goes on
    drawing the step noise of ancestral samplers. ``noise`` (unscaled ``[B, C, h, w]``) replaces
    the initial draw and ``generators`` (one per row) the step-noise generators (the dataset
    generation's official draw order for several images per row).
    """
    import torch

    with torch.no_grad():
        return _sample(pipe, prompts, seeds, guidance, sampler, steps, height, width, negative_prompt,
                       noise, generators)


def _sample(pipe: "SDPipeline", prompts: Sequence[str], seeds: Sequence[int], guidance: float | Sequence[float],
            sampler: str, steps: int, height: int | None, width: int | None, negative_prompt: str,
            noise: Any = None, generators: Sequence[Any] | None = None) -> "np.ndarray":
    import numpy as np
    import torch

    from memtui.engine.diffusion.guidance import guided_eps
    from memtui.engine.diffusion.noise import item_generators, noise_from_generators

    n = len(prompts)
    if n == 0:
        raise ValueError("sample() needs at least one prompt")
    if len(seeds) != n:
        raise ValueError(f"{n} prompts but {len(seeds)} seeds")
    g = [float(guidance)] * n if isinstance(guidance, (int, float)) else [float(x) for x in guidance]
    if len(g) != n:
        raise ValueError(f"{n} prompts but {len(g)} guidance scales")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    height = int(height or pipe.image_size)
    width = int(width or pipe.image_size)
    m, f = pipe.size_multiple, pipe.vae_scale
    if height % m or width % m:
        raise ValueError(f"image size {width}x{height} must be a multiple of {m}")
    scheduler = prepare_sampler(pipe, sampler, steps, height, width)
    flow = pipe.is_flow
    shape = (pipe.latent_channels, height // f, width // f)
    if noise is None:
        gens = item_generators(seeds)  # one per row: the initial noise, then the ancestral samplers' draws
        latents = noise_from_generators(gens, shape)
    else:
        if tuple(noise.shape) != (n, *shape):
            raise ValueError(f"noise must be {[n, *shape]}, got {list(noise.shape)}")
        gens = list(generators) if generators is not None else item_generators(seeds)
        latents = noise.float()
    latents = latents.to(pipe.device) * getattr(scheduler, "init_noise_sigma", 1.0)  # flow samplers have none: 1
    ancestral = "generator" in inspect.signature(scheduler.step).parameters and not flow

    uncond, cond = pipe.encode_prompts([negative_prompt] * n + list(prompts)).split(n)
    gscale = torch.tensor(g, dtype=torch.float32, device=pipe.device).view(n, 1, 1, 1)
    for t in scheduler.timesteps:
        if flow:  # Flux: the guidance is the distilled guidance embedding, one pass (FluxPipeline's)
            out = pipe.velocity(latents, t / 1000, cond, guidance=gscale.flatten())
        else:
            zin = scheduler.scale_model_input(latents, t)  # elementwise: the same on the doubled batch
            out = guided_eps(pipe, zin, t, cond, gscale, uncond)
        kw: dict[str, Any] = {"generator": gens} if ancestral else {}
        latents = scheduler.step(out, t, latents, **kw).prev_sample.float()
    from memtui.engine.core.tensors import to_uint8

    return to_uint8(pipe.decode_latents(latents))


__all__ = ["SAMPLERS", "FLOW_SAMPLERS", "DEFAULT_SAMPLER", "sampler_key", "prepare_sampler", "AUTO_SAMPLER", "DEFAULT_STEPS", "DEFAULT_GUIDANCE",
           "make_sampler", "sample"]
