"""ESD concept erasure (Gandikota et al., "Erasing Concepts from Diffusion Models", ICCV 2023) for
any :class:`SDPipeline`.

Each step draws a seed, runs the *model being edited* with the erased prompt (the shared DDIM
sampler, guidance ``start_guidance``) to a random timestep ``t`` of a ``ddim_steps`` schedule, and regresses its
conditional noise prediction for the erased prompt onto the frozen model's
``eps_uncond - eta * (eps_cond - eps_uncond)`` at that latent. Parameter sets (diffusers names):

- ``xattn``   (ESD-x) the cross-attention layers ``attn2`` — erases what the prompt triggers
- ``noxattn`` (ESD-u) everything except ``attn2``, the time embedding and the output layers
- ``full``    every UNet parameter
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F

from memtui.engine.diffusion.ddim import ddim_sample
from memtui.engine.diffusion.guidance import combine
from memtui.engine.diffusion.noise import noise_from_generator
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import timesteps

__all__ = ["PARAM_SETS", "esd_param_names", "esd_target", "esd_erase"]

PARAM_SETS = ("xattn", "noxattn", "full")


def esd_param_names(unet: torch.nn.Module, params: str) -> list[str]:
    """Names of the UNet parameters ESD fine-tunes for parameter set ``params``."""
    if params not in PARAM_SETS:
        raise ValueError(f"params must be one of {', '.join(PARAM_SETS)}, got {params!r}")
    names = [n for n, _ in unet.named_parameters()]
    if params == "xattn":
        return [n for n in names if ".attn2." in n]
    if params == "noxattn":
        skip = (".attn2.", "time_embedding.", "conv_out.", "conv_norm_out.")
        return [n for n in names if not any(s in n or n.startswith(s) for s in skip)]
    return names


def esd_target(frozen: torch.nn.Module, z: torch.Tensor, t: int | torch.Tensor, cond: torch.Tensor,
               uncond: torch.Tensor, eta: float) -> torch.Tensor:
    """ESD regression target ``eps_u - eta (eps_c - eps_u)`` ``[B, C, h, w]`` of the frozen UNet."""
    with torch.no_grad():
        b = z.shape[0]
        e = frozen(torch.cat([z, z]), t, encoder_hidden_states=torch.cat(
            [uncond.expand(b, -1, -1), cond.expand(b, -1, -1)])).sample.float()
    eu, ec = e.chunk(2)
    return combine(eu, ec, -eta)


def esd_erase(pipe: SDPipeline, concept_prompt: str, steps: int = 100, lr: float = 5e-4, eta: float = 1.0,
              params: str = "xattn", seed: int = 0,
              progress: Callable[[int, int, float], None] | None = None, ddim_steps: int = 50,
              start_guidance: float = 3.0, batch_size: int = 1) -> dict[str, torch.Tensor]:
    """Erase ``concept_prompt`` from ``pipe.unet`` **in place** (fp32 recommended); returns the
    changed UNet tensors (name -> tensor, CPU, a partial state dict). ``progress(i, steps, loss)``
    is called after each step. Deterministic for ``seed`` on a given device."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    unet = pipe.unet
    names = set(esd_param_names(unet, params))
    frozen = copy.deepcopy(unet).eval().requires_grad_(False)
    cond = pipe.encode_prompts([concept_prompt]).detach()
    uncond = pipe.encode_prompts([""]).detach()
    trainable = [p for n, p in unet.named_parameters() if n in names]
    unet.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trainable, lr=lr)
    ts = timesteps(pipe.make_scheduler(), ddim_steps)
    g = torch.Generator().manual_seed(int(seed))
    try:
        for i in range(steps):
            k = int(torch.randint(0, ddim_steps, (1,), generator=g))
            z = noise_from_generator(g, batch_size, pipe.latent_shape())
            unet.eval()
            z_t = ddim_sample(pipe, z, cond, ddim_steps, start_guidance, uncond_emb=uncond, stop=k).detach()
            t = ts[k]
            target = esd_target(frozen, z_t, t, cond, uncond, eta)
            unet.train()
            pred = pipe.eps(z_t, t, cond.expand(batch_size, -1, -1))
            loss = F.mse_loss(pred, target.to(pred.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None:
                progress(i + 1, steps, loss.item())
    finally:
        unet.eval().requires_grad_(False)
        pipe.clear_prompt_cache()
    return {n: p.detach().to("cpu").clone() for n, p in unet.named_parameters() if n in names}
