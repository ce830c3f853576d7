"""Null-text inversion (Mokady et al., CVPR 2023) over a batch, and the official code's variant.

``mode="paper"``: DDIM inversion with the conditional embedding gives the pivot trajectory
``z*_0..z*_T``; for each sampling step ``i`` (t = 981 → 1) a fresh Adam (lr ``lr·(1 − i/100)``)
optimises the null embedding, initialised from the previous step's, for up to ``inner_steps`` steps
on ``MSE(DDIM_step_CFG(z_t; ∅_t), z*_{t−1})``, stopping early once the loss (measured before the
update) is below ``early_stop + i·2e-5``; then the latent is stepped with CFG and the optimised
embedding. Reconstruct with ``ddim_sample(z_T, emb, guidance=7.5, null_embs=...)`` (:mod:`memtui.engine.diffusion.ddim`).

``mode="official"`` (spec §0.4, ``src/nti.py``): the clean latent is taken as the t=1 latent and
inverted 49 steps with eps at the current timestep (:func:`ddim_trajectory_t1`); one Adam with a
constant lr shared across all timesteps, ``inner_steps = steps`` (50) updates per timestep, no early
stop, and the latent carried forward is the prediction made *before* the last update. The official
reconstruction runs at guidance 1.0, so the optimised embeddings have no effect: **the seed is plain
(t=1-start) DDIM inversion and the reconstruction is plain DDIM sampling**.

Batching: per-item losses are summed (each item's gradient is its own; Adam is element-wise) and in
paper mode items that stopped early are frozen, so B items equal B single runs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from memtui.engine.diffusion.ddim import Progress, check_latents, ddim_step, schedule
from memtui.engine.diffusion.guidance import combine, empty_embedding
from memtui.engine.inversion.ddim import ddim_trajectory, ddim_trajectory_t1
from memtui.engine.inversion.methods.nti import NTI_MODES
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.schedule import alpha, alpha_prev

__all__ = ["NTIResult", "nti_invert"]


@dataclass
class NTIResult:
    """``z_T [B, C, h, w]`` seeds; ``null_embs [n, B, L, D]`` float32, one per sampling step in order
    981 → 1 (``n = steps``; ``steps − 1`` in official mode); ``guidance`` to reconstruct with (7.5 paper,
    1.0 official); ``stop_at_t1``: pass to :func:`ddim_sample` (official mode); ``losses [n, B]``: the
    last inner loss of each step (MSE per latent element)."""

    z_T: torch.Tensor
    null_embs: torch.Tensor
    guidance: float
    stop_at_t1: bool = False
    losses: torch.Tensor | None = None


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target) ** 2).flatten(1).mean(1)


def nti_invert(pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int = 50, mode: str = "paper",
               guidance: float = 7.5, inner_steps: int | None = None, lr: float = 1e-2, early_stop: float = 1e-5,
               progress: Progress | None = None) -> NTIResult:
    """Null-text inversion of scaled latents ``z0 [B, C, h, w]`` with prompt embeddings
    ``emb [B, L, D]``; ``guidance`` is the CFG scale used while optimising. ``inner_steps`` defaults
    to 10 (paper) or ``steps`` (official, where it is forced). Progress: ``(step_done, total)`` over
    ``steps`` inversion steps then ``steps`` optimisation steps (``steps − 1`` each in official mode)."""
    if mode not in NTI_MODES:
        raise ValueError(f"nti mode must be 'paper' or 'official', got {mode!r}")
    check_latents(z0, emb)
    n = steps if mode == "paper" else steps - 1
    total = 2 * n

    def inv_progress(done: int, _: int) -> None:
        if progress is not None:
            progress(done, total)

    if mode == "paper":
        traj = ddim_trajectory(pipe, z0, emb, steps, inv_progress)
        return _optimise_paper(pipe, traj, emb, steps, guidance, 10 if inner_steps is None else inner_steps,
                               lr, early_stop,
                               lambda i: progress(n + i, total) if progress else None)
    traj = ddim_trajectory_t1(pipe, z0, emb, steps, inv_progress)
    return _optimise_official(pipe, traj, emb, steps, guidance, steps, lr,
                              lambda i: progress(n + i, total) if progress else None)


def _optimise_paper(pipe: SDPipeline, traj: list[torch.Tensor], emb: torch.Tensor, steps: int, guidance: float,
                    inner_steps: int, lr: float, early_stop: float, tick: Callable[[int], None]) -> NTIResult:
    sched, ts = schedule(pipe, steps)
    B = emb.shape[0]
    uncond = empty_embedding(pipe, B).float().clone()
    latent = traj[-1]
    nulls, losses = [], []
    for i, t in enumerate(ts):
        a_t, a_p = alpha(sched, t), alpha_prev(sched, t, steps)
        target = traj[steps - 1 - i]
        with torch.no_grad():
            e_c = pipe.eps(latent, t, emb)
        param = uncond.clone().requires_grad_(True)
        opt = torch.optim.Adam([param], lr=lr * (1.0 - i / 100.0))
        active = torch.ones(B, dtype=torch.bool)
        last = torch.zeros(B)
        for _ in range(inner_steps):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            dev_idx = idx.to(latent.device)
            with torch.enable_grad():
                e_u = pipe.eps(latent[dev_idx], t, param[dev_idx])
                e = combine(e_u, e_c[dev_idx], guidance)
                loss = _mse(ddim_step(latent[dev_idx], e, a_t, a_p), target[dev_idx])
                opt.zero_grad()
                loss.sum().backward()
            frozen = ~active
            kept = param.detach()[frozen.to(param.device)].clone()
            opt.step()
            with torch.no_grad():
                param[frozen.to(param.device)] = kept
            lv = loss.detach().cpu()
            last[idx] = lv.float()
            active[idx[lv < early_stop + i * 2e-5]] = False
        uncond = param.detach()
        nulls.append(uncond)
        losses.append(last.clone())
        with torch.no_grad():  # step with the optimised embedding (e_c is unchanged: reuse it)
            e_u = pipe.eps(latent, t, uncond)
            latent = ddim_step(latent, combine(e_u, e_c, guidance), a_t, a_p)
        tick(i + 1)
    return NTIResult(z_T=traj[-1], null_embs=torch.stack(nulls), guidance=guidance, stop_at_t1=False,
                     losses=torch.stack(losses))


def _optimise_official(pipe: SDPipeline, traj: list[torch.Tensor], emb: torch.Tensor, steps: int, guidance: float,
                       inner_steps: int, lr: float, tick: Callable[[int], None]) -> NTIResult:
    sched, ts = schedule(pipe, steps)
    B = emb.shape[0]
    param = empty_embedding(pipe, B).float().clone().requires_grad_(True)
    opt = torch.optim.Adam([param], lr=lr)  # one optimizer for all timesteps, as the official code
    latent = traj[-1]
    nulls, losses = [], []
    for i, t in enumerate(ts[:-1]):
        a_t, a_p = alpha(sched, t), alpha_prev(sched, t, steps)
        target = traj[steps - 2 - i]
        with torch.no_grad():
            e_c = pipe.eps(latent, t, emb)
        pred = latent
        loss = torch.zeros(B)
        for _ in range(inner_steps):
            with torch.enable_grad():
                e_u = pipe.eps(latent, t, param)
                pred = ddim_step(latent, combine(e_u, e_c, guidance), a_t, a_p)
                loss = _mse(pred, target)
                loss.sum().backward()
            opt.step()
            opt.zero_grad()
        nulls.append(param.detach().clone())
        losses.append(loss.detach().cpu())
        latent = pred.detach()  # official quirk: the prediction made before the last update
        tick(i + 1)
    return NTIResult(z_T=traj[-1], null_embs=torch.stack(nulls), guidance=1.0, stop_at_t1=True,
                     losses=torch.stack(losses))
