"""ReNoise inversion as configured by the official code (spec §0.3), batched with one CPU generator
per item.

Per timestep ``t`` (ascending) the inverse DDIM step is iterated as a fixed point: ``z^(0) = z_prev``,
``e_i = eps(z^(i), t, c)``, ``z^(i+1) = inv(e_i)`` for ``i = 0..K``. Below ``first_step_max_timestep``
(t < 250) the raw ``e_0..e_4`` are averaged, each ``e_i`` and the average are passed through the noise
regularisation ``Reg`` (KL patch term + auto-correlation term, pix2pix-zero style) and the output is
``inv(Reg(mean))``; from t = 250 on it is plain fixed-point iteration. Guidance 0: conditional only.

Randomness: ``Reg`` draws roll amounts ``r ~ randint(0, size/2)`` from the item's generator, in the
official order (outer step, AC roll, channel, pyramid level); every item sees the same sequence of
``Reg`` calls, so a batch consumes each generator exactly as a single run does.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from memtui.engine.diffusion.ddim import Progress, check_latents, ddim_step, schedule
from memtui.engine.diffusion.noise import repeated_generators
from memtui.engine.inversion.methods.renoise import RenoiseConfig, RenoiseOptions
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import alpha, alpha_prev

__all__ = ["OFFICIAL_SEED", "RenoiseOptions", "RenoiseConfig", "pyramid_sizes", "draw_rolls", "patch_kl",
           "autocorr_loss", "regularize", "consume_reg_draws", "renoise_step", "renoise_invert"]

OFFICIAL_SEED = 42


# --------------------------------------------------------------------------- noise regularisation
def pyramid_sizes(side: int) -> list[int]:
    """Sides of the auto-correlation pyramid: halve until <= 8 (64 -> [64, 32, 16, 8])."""
    sizes = [side]
    while sizes[-1] > 8:
        sizes.append(sizes[-1] // 2)
    return sizes


def draw_rolls(generators: Sequence[torch.Generator], cfg: RenoiseOptions, channels: int, side: int) -> torch.Tensor:
    """Roll amounts for one ``Reg`` call, ``[B, num_reg_steps, num_ac_rolls, C, levels]`` int64 (CPU),
    drawn per item in the official order. Each draw is ``randint(0, size // 2)`` for the level's size.
    Empty along dim 1 when the AC term is off (no draws, as the official code)."""
    sizes = pyramid_sizes(side)
    n_reg = cfg.num_reg_steps if cfg.lambda_ac > 0 else 0
    shape = (n_reg, cfg.num_ac_rolls, channels, len(sizes))
    highs = torch.tensor([s // 2 for s in sizes], dtype=torch.int64)
    hmax = int(highs.max())
    count = n_reg * cfg.num_ac_rolls * channels * len(sizes)
    out = []
    for g in generators:
        if count == 0:
            out.append(torch.zeros(shape, dtype=torch.int64))
        elif all(hmax % int(h) == 0 for h in highs):
            # torch's CPU randint takes one 32-bit draw per element and reduces it mod the range, so one
            # vectorised draw mod the largest range, reduced mod each level's range, equals the
            # official one-by-one draws when every range divides the largest (powers of two).
            raw = torch.randint(0, hmax, (count,), generator=g).view(shape)
            out.append(raw % highs)
        else:
            flat = [torch.randint(0, int(highs[k]), (1,), generator=g).item()
                    for _ in range(count // len(sizes)) for k in range(len(sizes))]
            out.append(torch.tensor(flat, dtype=torch.int64).view(shape))
    return torch.stack(out)


def patch_kl(e: torch.Tensor, ref: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """Per-item KL patch loss ``[B]``: per ``patch``x``patch`` patch and channel, mean and unbiased
    variance of ``e`` (0) and ``ref`` (1), summed ``|log((v1+1e-6)/(v0+1e-6)) + (v0+(m0−m1)²)/(v1+1e-6) − 1|``."""
    B, C, H, W = e.shape

    def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = x.reshape(B, C, H // patch, patch, W // patch, patch).permute(0, 1, 2, 4, 3, 5).reshape(B, C, -1, patch * patch)
        return p.mean(-1), p.var(-1)

    m0, v0 = stats(e)
    m1, v1 = stats(ref)
    eps = 1e-6
    kl = torch.log((v1 + eps) / (v0 + eps)) + (v0 + (m0 - m1) ** 2) / (v1 + eps) - 1
    return kl.abs().flatten(1).sum(1)


def autocorr_loss(e: torch.Tensor, rolls: torch.Tensor) -> torch.Tensor:
    """Per-item auto-correlation loss ``[B]``: over channels and pyramid levels (2x average pooling
    until the side is <= 8), ``mean(x·roll_h(x, r))² + mean(x·roll_w(x, r))²`` with the level's roll
    ``r = rolls[b, c, level]`` (``rolls [B, C, levels]``, same r for both axes)."""
    B, C, _, _ = e.shape
    rolls = rolls.to(e.device)
    x = e
    total = e.new_zeros(B)
    for level in range(rolls.shape[-1]):
        S = x.shape[2]
        idx = (torch.arange(S, device=e.device).view(1, 1, S) - rolls[:, :, level, None]) % S  # [B, C, S]
        rolled_h = torch.gather(x, 2, idx[:, :, :, None].expand(B, C, S, x.shape[3]))
        rolled_w = torch.gather(x, 3, idx[:, :, None, :].expand(B, C, x.shape[2], S))
        total = total + ((x * rolled_h).mean((2, 3)) ** 2 + (x * rolled_w).mean((2, 3)) ** 2).sum(1)
        if level + 1 < rolls.shape[-1]:
            x = F.avg_pool2d(x, kernel_size=2)
    return total


def regularize(e: torch.Tensor, e_opt: torch.Tensor, cfg: RenoiseOptions,
               generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Noise regularisation ``Reg`` of a batch of noise predictions ``e [B, C, h, w]`` toward the
    reference ``e_opt``; ``num_reg_steps`` times: a KL step ``e −= λ_kl·clip(∂KL/∂e, ±clip)``, then
    ``num_ac_rolls`` AC steps ``e −= λ_ac·(∂AC/∂e)/num_ac_rolls``. Per-item losses are summed, so each
    item's gradient is its own. Returns float32, detached."""
    rolls = draw_rolls(generators, cfg, e.shape[1], e.shape[2])
    e = e.detach().float()
    e_opt = e_opt.detach().float()
    with torch.enable_grad():
        for outer in range(cfg.num_reg_steps):
            if cfg.lambda_kl > 0:
                x = e.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(patch_kl(x, e_opt, cfg.kl_patch_size).sum(), x)
                e = e - cfg.lambda_kl * g.clamp(-cfg.kl_grad_clip, cfg.kl_grad_clip)
            if cfg.lambda_ac > 0:
                for r in range(cfg.num_ac_rolls):
                    x = e.clone().requires_grad_(True)
                    (g,) = torch.autograd.grad(autocorr_loss(x, rolls[:, outer, r]).sum(), x)
                    e = e - cfg.lambda_ac * (g / cfg.num_ac_rolls)
            e = e.detach()
    return e


def consume_reg_draws(generators: Sequence[torch.Generator], cfg: RenoiseOptions, channels: int, side: int) -> None:
    """Advance each generator exactly as one ``Reg`` call would, without computing it."""
    draw_rolls(generators, cfg, channels, side)


# --------------------------------------------------------------------------- inversion
@torch.no_grad()
def renoise_step(pipe: SDPipeline, z_prev: torch.Tensor, z0: torch.Tensor, emb: torch.Tensor, t: int,
                 a_prev: float, a_t: float, cfg: RenoiseOptions, generators: Sequence[torch.Generator],
                 emb2: torch.Tensor | None = None) -> torch.Tensor:
    """One ReNoise inversion step ``z_prev -> z_t`` (float32 ``[B, C, h, w]``) at timestep ``t``
    between noise levels ``a_prev`` and ``a_t`` (alphas_cumprod); ``z0`` is the clean latent whose
    prediction ``e_opt = eps(z0, t, c)`` is the regularisation reference (official quirk: the
    identity ``add_noise``). Follows the official control flow for any :class:`RenoiseOptions`."""
    B, C, _, side = z_prev.shape
    first = t < cfg.first_step_max_timestep
    lo, hi = cfg.average_first_step_range if first else cfg.average_step_range
    K = min(cfg.max_num_renoise_steps_first_step, cfg.num_renoise_steps) if first else cfg.num_renoise_steps

    def reg_here(i: int) -> bool:
        return cfg.noise_regularization and (i >= lo or (not cfg.average_latent_estimations and i > 0))

    averaged = [i for i in range(K + 1) if lo <= i < hi]
    final_avg = cfg.average_latent_estimations and bool(averaged)
    need_opt = cfg.noise_regularization and (final_avg or any(reg_here(i) for i in range(K + 1)))
    e_opt = None
    avg = None
    zi = z_prev
    for i in range(K + 1):
        if i == K and final_avg and i not in averaged:
            if reg_here(i):  # the official code regularises e_K and discards the result
                consume_reg_draws(generators, cfg, C, side)
            break
        if i == 0 and need_opt:
            e_opt, e = pipe.eps(torch.cat([z0, zi]), t, emb2 if emb2 is not None else torch.cat([emb, emb])).chunk(2)
        else:
            e = pipe.eps(zi, t, emb)
        if lo <= i < hi:  # running uniform mean of the raw estimates, as the official code
            j = i - lo
            avg = e.clone() if avg is None else j * avg / (j + 1) + e / (j + 1)
        if reg_here(i):
            e = regularize(e, e_opt, cfg, generators)
        zi = ddim_step(z_prev, e, a_prev, a_t)
    if final_avg and avg is not None:
        if cfg.noise_regularization:
            avg = regularize(avg, e_opt, cfg, generators)
        zi = ddim_step(z_prev, avg, a_prev, a_t)
    return zi


@torch.no_grad()
def renoise_invert(pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int = 50,
                   config: RenoiseOptions | None = None, generators: Sequence[torch.Generator] | None = None,
                   progress: Progress | None = None) -> torch.Tensor:
    """ReNoise seeds ``z_T [B, C, h, w]`` (float32) of scaled latents ``z0`` with embeddings
    ``emb [B, L, D]`` (conditional only), exactly the official algorithm (spec §0.3), one
    :func:`renoise_step` per timestep 1, 21, …, 981. ``config`` defaults to ``RenoiseOptions()``;
    ``generators``: one CPU generator per item for the AC roll draws (default: fresh ones seeded 42).

    The reference ``e_opt = eps(z0, t, c)`` is computed in the same UNet pass as ``e_0`` whenever
    ``Reg`` runs at this step. When the last iterate would be replaced by the averaged estimate and
    is not itself averaged (default: ``e_5`` for t < 250), its UNet call and ``Reg`` are skipped but
    ``Reg``'s draws are still taken, so results and generator state equal the official code's. Cost
    with defaults: 6 UNet evaluations per step (for t < 250: 5 iterates + ``e_opt``). Progress:
    ``(step_done, steps)``."""
    cfg = config or RenoiseOptions()
    cfg.validate()
    check_latents(z0, emb)
    B = z0.shape[0]
    gens = list(generators) if generators is not None else repeated_generators(B, OFFICIAL_SEED)
    if len(gens) != B:
        raise ValueError(f"need one generator per item ({B}), got {len(gens)}")
    sched, ts = schedule(pipe, steps)
    z0 = z0.to(pipe.device, torch.float32)
    emb2 = torch.cat([emb, emb])
    z = z0
    for k, t in enumerate(reversed(ts)):
        z = renoise_step(pipe, z, z0, emb, t, alpha_prev(sched, t, steps), alpha(sched, t), cfg, gens, emb2)
        if progress is not None:
            progress(k + 1, steps)
    return z
