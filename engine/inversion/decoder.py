"""VAE decoder inversion (spec §2 ``DecInv``): find the unscaled VAE latent ``z`` whose decoding
matches a target image, by Adam on ``z`` with the decoder frozen.

Loss per item ``i`` (all means over that item's elements only)::

    L_i = w_mse · MSE(D(z_i)/2 + 0.5, I_i/2 + 0.5)             # decoder output NOT clamped
        + w_prior · mean((z_i - mu_i)^2)                         # optional, off by default
        + w_nll · mean(0.5·(log var_i + (z_i - mu_i)^2 / var_i)) # optional Gaussian NLL, off

with ``mu_i, var_i`` the encoder posterior of the target (only computed when a regulariser is on).
The batch minimises ``sum_i L_i``: each ``z_i`` only receives the gradient of its own ``L_i`` and Adam
is element-wise, so a batched run equals ``B`` separate runs (spec §5.4). The forward/backward may
be split into chunks of ``chunk_size`` items whose gradients accumulate before the one Adam step
(same result, less memory).

Precision: ``z`` (the optimised variable) and Adam state are float32; the decoder runs in the
pipeline's dtype; the loss is computed in float32.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from memtui.engine.data.images import to_uint8
from memtui.engine.metrics import psnr_batch
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.core.cancel import is_cancelled

# Official SIB call: DecInv(..., scales=(1, 0, 0)) — plain MSE, no regularisation.
DEFAULT_LOSS_WEIGHTS: tuple[float, float, float] = (1.0, 0.0, 0.0)
# learning-rate schedules over the ``steps`` Adam steps: the official constant lr, or cosine decay
# from ``lr`` to 0 (torch.optim.lr_scheduler.CosineAnnealingLR, T_max = steps)
SCHEDULES: tuple[str, ...] = ("constant", "cosine")


class DecoderInversionCancelled(RuntimeError):
    """Raised by :func:`decoder_invert` when its ``cancel`` signal is set between Adam steps."""


@dataclass
class DecoderInversionResult:
    """Outcome of a (batched) decoder inversion.

    z:        ``[B, C, h, w]`` float32 unscaled VAE latents after the last step (not the best step,
              as the official code).
    losses:   ``[B]`` float64 per-item loss of the final ``z`` (evaluated after the last update).
    psnr:     ``[B]`` PSNR in dB of the decoder-only reconstruction ``D(z)`` vs the target, both as
              uint8 RGB (spec §0.5).
    images:   ``[B, 3, H, W]`` float32 decoder reconstructions ``D(z)`` in [-1, 1] (clamped).
    history:  ``[steps, B]`` float64 per-item loss at every step (loss of the ``z`` *before* that
              step's update; row 0 is the loss at the initial latent).
    """

    z: torch.Tensor
    losses: np.ndarray
    psnr: np.ndarray
    images: torch.Tensor
    history: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


def _item_losses(pipe: SDPipeline, z: torch.Tensor, target01: torch.Tensor, weights: tuple[float, float, float],
                 mu: torch.Tensor | None, var: torch.Tensor | None) -> torch.Tensor:
    """Per-item losses ``[b]`` (float32) for latents ``z [b, C, h, w]`` (unscaled)."""
    dec = pipe.vae.decode(z.to(pipe.vae_dtype)).sample.float()
    w_mse, w_prior, w_nll = weights
    loss = w_mse * ((dec / 2 + 0.5 - target01) ** 2).flatten(1).mean(1)
    if w_prior:
        loss = loss + w_prior * ((z - mu) ** 2).flatten(1).mean(1)
    if w_nll:
        v = var.clamp_min(1e-6)
        loss = loss + w_nll * (0.5 * (v.log() + (z - mu) ** 2 / v)).flatten(1).mean(1)
    return loss


def decoder_invert(
    pipe: SDPipeline,
    targets: torch.Tensor,
    init_latents: torch.Tensor,
    steps: int = 3000,
    lr: float = 1e-2,
    loss_weights: tuple[float, float, float] = DEFAULT_LOSS_WEIGHTS,
    progress: Callable[[int, int, float], None] | None = None,
    cancel: Any = None,
    chunk_size: int | None = None,
    progress_every: int = 10,
    schedule: str = "constant",
) -> DecoderInversionResult:
    """Invert the VAE decoder of ``pipe`` for ``targets [B, 3, H, W]`` in [-1, 1], starting from
    ``init_latents [B, C, h, w]`` (unscaled VAE latents, e.g. the encoder mean), with ``steps`` Adam
    steps at learning rate ``lr`` (default betas/eps, no schedule). ``loss_weights`` =
    (MSE, prior, Gaussian NLL) as in the module docstring. ``progress(step, steps, mean_loss)`` is
    called every ``progress_every`` steps and at the end; ``cancel`` (Event-like or callable) is
    checked between steps and raises :class:`DecoderInversionCancelled`. ``chunk_size`` bounds the
    number of items per forward/backward (gradients accumulate; the result does not change).
    ``schedule``: the learning rate over the steps, ``constant`` (official) or ``cosine`` (from
    ``lr`` down to 0 at the last step).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if targets.ndim != 4 or init_latents.ndim != 4 or targets.shape[0] != init_latents.shape[0]:
        raise ValueError(f"targets [B,3,H,W] and init_latents [B,C,h,w] must share B; got "
                         f"{tuple(targets.shape)} and {tuple(init_latents.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    dev = pipe.device
    n = targets.shape[0]
    chunk = max(1, chunk_size or n)
    weights = tuple(float(w) for w in loss_weights)
    if len(weights) != 3:
        raise ValueError(f"loss_weights must be (mse, prior, nll), got {loss_weights}")
    target01 = (targets.to(dev, torch.float32) / 2 + 0.5)
    mu = var = None
    if weights[1] or weights[2]:
        with torch.no_grad():
            post = pipe.vae.encode(targets.to(dev, pipe.vae_dtype)).latent_dist
        mu, var = post.mean.float(), post.var.float()

    vae_grad = [p.requires_grad for p in pipe.vae.parameters()]
    pipe.vae.requires_grad_(False)
    z = init_latents.detach().to(dev, torch.float32).clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps)) if schedule == "cosine" else None
    history = np.zeros((steps, n), dtype=np.float64)
    try:
        for step in range(steps):
            if is_cancelled(cancel):
                raise DecoderInversionCancelled(f"cancelled at decoder-inversion step {step}/{steps}")
            opt.zero_grad(set_to_none=True)
            for a in range(0, n, chunk):
                sl = slice(a, a + chunk)
                losses = _item_losses(pipe, z[sl], target01[sl], weights,
                                      None if mu is None else mu[sl], None if var is None else var[sl])
                losses.sum().backward()
                history[step, sl] = losses.detach().double().cpu().numpy()
            opt.step()
            if sched is not None:
                sched.step()
            if progress is not None and ((step + 1) % progress_every == 0 or step + 1 == steps):
                progress(step + 1, steps, float(history[step].mean()))
        with torch.no_grad():
            zf = z.detach()
            final = torch.cat([_item_losses(pipe, zf[a:a + chunk], target01[a:a + chunk], weights,
                                            None if mu is None else mu[a:a + chunk],
                                            None if var is None else var[a:a + chunk])
                                for a in range(0, n, chunk)])
            images = torch.cat([pipe.vae.decode(zf[a:a + chunk].to(pipe.vae_dtype)).sample.float().clamp(-1, 1)
                                for a in range(0, n, chunk)])
    finally:
        for p, g in zip(pipe.vae.parameters(), vae_grad):
            p.requires_grad_(g)
    psnr = psnr_batch(to_uint8(images), to_uint8(targets))
    return DecoderInversionResult(z=zf.clone(), losses=final.double().cpu().numpy(), psnr=psnr,
                                  images=images.cpu(), history=history)


def encoder_mean(pipe: SDPipeline, images: torch.Tensor) -> torch.Tensor:
    """Unscaled VAE posterior means ``[B, C, h, w]`` (float32) of images ``[B, 3, H, W]`` in [-1, 1]
    — the official initialisation of the decoder inversions."""
    with torch.no_grad():
        return pipe.vae.encode(images.to(pipe.device, pipe.vae_dtype)).latent_dist.mean.float()
