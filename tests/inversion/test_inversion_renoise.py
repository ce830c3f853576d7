"""ReNoise: regularisation pieces against straightforward one-item references (official loop
structure, one randint per draw), control flow (K=0 == DDIM; averaging/regularisation only below
t=250), generator consumption and batch == single."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from memtui.engine.inversion import (RenoiseConfig, autocorr_loss, ddim_invert, ddim_trajectory, draw_rolls,
                                     patch_kl, regularize, renoise_invert, renoise_step)
from memtui.engine.diffusion.ddim import schedule
from memtui.engine.model.schedule import alpha, alpha_prev

pytestmark = pytest.mark.usefixtures("_one_thread")  # single-threaded torch: see tests/conftest.py

PROMPTS = ["a red circle", "a photo of a dog"]
PLAIN = RenoiseConfig(noise_regularization=False, average_latent_estimations=False)



@pytest.fixture(scope="module")
def z0() -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def emb(tiny_pipe) -> torch.Tensor:
    return tiny_pipe.encode_prompts(PROMPTS)


# --------------------------------------------------------------------------- one-item references
def ref_rolls(g: torch.Generator, cfg: RenoiseConfig, channels: int, side: int) -> list[int]:
    """The official draw sequence of one Reg call: outer, AC roll, channel, pyramid level."""
    out = []
    for _ in range(cfg.num_reg_steps):
        for _ in range(cfg.num_ac_rolls):
            for _ in range(channels):
                size = side
                while True:
                    out.append(int(torch.randint(0, size // 2, (1,), generator=g).item()))
                    if size <= 8:
                        break
                    size //= 2
    return out


def ref_kl(x: np.ndarray, y: np.ndarray) -> float:
    """Official patch KL for one item [C, H, W] in float64 (4x4 patches, unbiased variance)."""
    C, H, W = x.shape
    total = 0.0
    for c in range(C):
        for i in range(0, H, 4):
            for j in range(0, W, 4):
                a, b = x[c, i:i + 4, j:j + 4].ravel(), y[c, i:i + 4, j:j + 4].ravel()
                m0, m1, v0, v1 = a.mean(), b.mean(), a.var(ddof=1), b.var(ddof=1)
                total += abs(np.log((v1 + 1e-6) / (v0 + 1e-6)) + (v0 + (m0 - m1) ** 2) / (v1 + 1e-6) - 1)
    return total


def ref_ac_loss(x: torch.Tensor, rolls: list[int]) -> torch.Tensor:
    """Official auto-correlation loss of one item [1, C, H, W] with per-channel/level rolls."""
    loss = x.new_zeros(())
    it = iter(rolls)
    for c in range(x.shape[1]):
        noise = x[:, c:c + 1]
        while True:
            r = next(it)
            loss = loss + (noise * torch.roll(noise, shifts=r, dims=2)).mean() ** 2
            loss = loss + (noise * torch.roll(noise, shifts=r, dims=3)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return loss


def ref_regularize(e: torch.Tensor, e_opt: torch.Tensor, cfg: RenoiseConfig, g: torch.Generator) -> torch.Tensor:
    """Official Reg for one item [1, C, H, W] (torch autograd, one randint per draw)."""
    C, side = e.shape[1], e.shape[2]
    n_levels = len(ref_rolls(torch.Generator().manual_seed(0), dataclasses.replace(cfg, num_reg_steps=1, num_ac_rolls=1), 1, side))
    for _ in range(cfg.num_reg_steps):
        v = e.detach().clone().requires_grad_(True)
        m0 = v.unfold(2, 4, 4).unfold(3, 4, 4).reshape(1, C, -1, 16)
        m1 = e_opt.unfold(2, 4, 4).unfold(3, 4, 4).reshape(1, C, -1, 16)
        v0, v1 = m0.var(-1), m1.var(-1)
        kl = (torch.log((v1 + 1e-6) / (v0 + 1e-6)) + (v0 + (m0.mean(-1) - m1.mean(-1)) ** 2) / (v1 + 1e-6) - 1)
        kl.abs().sum().backward()
        e = e - cfg.lambda_kl * torch.clip(v.grad, -100, 100)
        for _ in range(cfg.num_ac_rolls):
            rolls = [int(torch.randint(0, s // 2, (1,), generator=g).item())
                     for _ in range(C) for s in [side // 2 ** k for k in range(n_levels)]]
            v = e.detach().clone().requires_grad_(True)
            ref_ac_loss(v, rolls).backward()
            e = e - cfg.lambda_ac * v.grad / cfg.num_ac_rolls
        e = e.detach()
    return e


# --------------------------------------------------------------------------- pieces
@pytest.mark.parametrize("side", [64, 8, 36])
def test_draw_rolls_follow_official_order(side):
    cfg = RenoiseConfig()
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    got = draw_rolls(gens, cfg, 4, side)
    for b, s in enumerate((5, 6)):
        g = torch.Generator().manual_seed(s)
        assert got[b].flatten().tolist() == ref_rolls(g, cfg, 4, side)
        assert torch.equal(g.get_state(), gens[b].get_state())  # same generator position afterwards


def test_patch_kl_matches_numpy():
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = 0.7 * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.1
    got = patch_kl(x, y)
    for b in range(2):
        assert float(got[b]) == pytest.approx(ref_kl(x[b].numpy(), y[b].numpy()), rel=1e-10)


def test_autocorr_loss_matches_torch_roll():
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    rolls = torch.randint(0, 8, (2, 4, 2), generator=torch.Generator().manual_seed(9)) % torch.tensor([8, 4])
    got = autocorr_loss(x, rolls)
    for b in range(2):
        want = ref_ac_loss(x[b:b + 1], rolls[b].flatten().tolist())
        assert float(got[b]) == pytest.approx(float(want), rel=1e-10)


def test_regularize_matches_one_item_reference():
    cfg = RenoiseConfig()
    e = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(11))
    e_opt = 0.8 * torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(12))
    got = regularize(e, e_opt, cfg, [torch.Generator().manual_seed(s) for s in (1, 2)])
    for b, s in enumerate((1, 2)):
        want = ref_regularize(e[b:b + 1], e_opt[b:b + 1], cfg, torch.Generator().manual_seed(s))
        torch.testing.assert_close(got[b:b + 1], want, rtol=1e-5, atol=1e-5)
    assert float((got - e).abs().max()) > 1e-3  # it does move the noise


# --------------------------------------------------------------------------- control flow
def test_k0_without_regularisation_or_averaging_is_ddim(tiny_pipe, z0, emb):
    cfg = dataclasses.replace(PLAIN, num_renoise_steps=0)
    torch.testing.assert_close(renoise_invert(tiny_pipe, z0, emb, 10, cfg), ddim_invert(tiny_pipe, z0, emb, 10),
                               rtol=0, atol=1e-6)


def test_averaging_and_regularisation_only_below_t250(tiny_pipe, z0, emb):
    """Step by step from the same input: the official configuration equals plain fixed-point
    iteration (hand-written) for t >= 250 and differs from it for t < 250."""
    steps = 10
    sched, ts = schedule(tiny_pipe, steps)
    traj = ddim_trajectory(tiny_pipe, z0, emb, steps)  # some realistic inputs per step
    gens = [torch.Generator().manual_seed(42) for _ in range(2)]
    for k, t in enumerate(reversed(ts)):
        if t not in (1, 201, 301, 901):
            continue
        a_p, a_t = alpha_prev(sched, t, steps), alpha(sched, t)
        z_prev = traj[k]
        official = renoise_step(tiny_pipe, z_prev, z0, emb, t, a_p, a_t, RenoiseConfig(), gens)
        z = z_prev
        for _ in range(6):  # K = 5: six UNet calls, plain fixed point
            e = tiny_pipe.eps(z, t, emb).double()
            z = (np.sqrt(a_t / a_p) * z_prev.double()
                 + (np.sqrt(1 - a_t) - np.sqrt(a_t / a_p) * np.sqrt(1 - a_p)) * e).float()
        if t >= 250:
            torch.testing.assert_close(official, z, rtol=0, atol=1e-5)
        else:
            assert float((official - z).abs().max()) > 1e-3


def test_renoise_consumes_official_number_of_draws(tiny_pipe, z0, emb):
    """10 steps: t in {1, 101, 201} are below 250; each runs Reg 7 times (e_0..e_5 and the average)
    of 4 x 5 x 4 channels x 1 level (8x8 latents) draws."""
    g = torch.Generator().manual_seed(42)
    renoise_invert(tiny_pipe, z0[:1], emb[:1], 10, generators=[g])
    ref = torch.Generator().manual_seed(42)
    torch.randint(0, 4, (3 * 7 * 4 * 5 * 4,), generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())


def test_batch_equals_single(tiny_pipe, z0, emb):
    gb = [torch.Generator().manual_seed(s) for s in (42, 7)]
    zb = renoise_invert(tiny_pipe, z0, emb, 6, generators=gb)  # t in {1, 167} below 250
    zs = torch.cat([renoise_invert(tiny_pipe, z0[i:i + 1], emb[i:i + 1], 6,
                                   generators=[torch.Generator().manual_seed(s)])
                    for i, s in enumerate((42, 7))])
    torch.testing.assert_close(zb, zs, rtol=0, atol=1e-5)
    # the generators matter (different rolls -> different seeds) and regularisation is on
    z42 = renoise_invert(tiny_pipe, z0[1:], emb[1:], 6, generators=[torch.Generator().manual_seed(42)])
    assert float((z42 - zs[1:]).abs().max()) > 1e-6


def test_config_round_trip_and_validation():
    cfg = RenoiseConfig(num_renoise_steps=3, average_step_range=(2, 4))
    assert RenoiseConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        RenoiseConfig.from_dict({"num_renoise": 3})
    with pytest.raises(ValueError, match="lambda_kl"):
        RenoiseConfig.from_dict({"lambda_kl": -1})
    with pytest.raises(ValueError, match="average_step_range"):
        RenoiseConfig.from_dict({"average_step_range": [1]})
