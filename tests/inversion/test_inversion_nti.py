"""Null-text inversion: paper mode against a one-item reference written like the original code
(diffusers DDIM step, fresh Adam per step, lr decay, early stop), batch == single with per-item early
stopping, reconstruction quality at CFG 7.5; official mode against the official loop."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from memtui.engine.inversion import ddim_sample, ddim_trajectory, ddim_trajectory_t1, empty_embedding, nti_invert

pytestmark = pytest.mark.usefixtures("_one_thread")  # single-threaded torch: see tests/conftest.py

PROMPTS = ["a red circle", "a blue square", "a photo of a dog"]



@pytest.fixture(scope="module")
def pipe64(tiny_pipe):
    """Float64 copy: Adam normalises each coordinate's gradient, so float32 rounding differences
    between a batched and a single UNet pass grow to ~1e-2 in small-gradient coordinates of the null
    embedding; in float64 batched and single runs agree exactly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return copy.deepcopy(tiny_pipe).to(dtype=torch.float64)


@pytest.fixture(scope="module")
def z0() -> torch.Tensor:
    return torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))


def ddim_scheduler(steps: int) -> DDIMScheduler:
    s = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    s.set_timesteps(steps)
    return s


def reference_paper_nti(pipe, z0, emb, steps, inner, early_stop, guidance=7.5):
    """Original null-text inversion loop for one item."""
    sched = ddim_scheduler(steps)
    pivots = ddim_trajectory(pipe, z0, emb, steps)
    uncond = empty_embedding(pipe, 1).float().clone()
    latent = pivots[-1]
    nulls = []
    for i, t in enumerate(sched.timesteps):
        target = pivots[len(pivots) - i - 2]
        with torch.no_grad():
            e_c = pipe.eps(latent, t, emb)
        uncond = uncond.clone().detach().requires_grad_(True)
        opt = torch.optim.Adam([uncond], lr=1e-2 * (1.0 - i / 100.0))
        for _ in range(inner):
            e_u = pipe.eps(latent, t, uncond)
            prev = sched.step(e_u + guidance * (e_c - e_u), t, latent).prev_sample
            loss = F.mse_loss(prev, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if loss.item() < early_stop + i * 2e-5:
                break
        nulls.append(uncond.detach().clone())
        with torch.no_grad():
            e_u = pipe.eps(latent, t, uncond)
            latent = sched.step(e_u + guidance * (e_c - e_u), t, latent).prev_sample
    return pivots[-1], torch.stack(nulls)


def test_paper_mode_matches_original_loop(pipe64, z0):
    emb = pipe64.encode_prompts(PROMPTS[:1])
    res = nti_invert(pipe64, z0[:1], emb, 4, inner_steps=5, early_stop=0.12)
    assert res.null_embs.shape == (4, 1, 77, 32) and res.guidance == 7.5 and not res.stop_at_t1
    zT, nulls = reference_paper_nti(pipe64, z0[:1], emb, 4, 5, 0.12)
    torch.testing.assert_close(res.z_T, zT, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.null_embs, nulls, rtol=0, atol=1e-4)


def test_paper_mode_zero_inner_steps_keeps_the_empty_embedding(pipe64, z0):
    """inner_steps=0 is an ablation (no optimisation), not "use the default of 10"."""
    emb = pipe64.encode_prompts(PROMPTS[:1])
    res = nti_invert(pipe64, z0[:1], emb, 4, inner_steps=0)
    empty = empty_embedding(pipe64, 1).to(res.null_embs.dtype)
    for k in range(4):
        torch.testing.assert_close(res.null_embs[k], empty, rtol=0, atol=0)


def test_paper_batch_equals_single_with_per_item_early_stop(pipe64, z0):
    emb = pipe64.encode_prompts(PROMPTS)
    stop = 0.42  # step 0 losses without early stop end ≈ 0.32, 0.40, 0.46: items 0 and 1 stop early, 2 does not
    b = nti_invert(pipe64, z0, emb, 4, inner_steps=5, early_stop=stop)
    assert (b.losses[0] < stop).tolist() == [True, True, False]
    singles = [nti_invert(pipe64, z0[i:i + 1], emb[i:i + 1], 4, inner_steps=5, early_stop=stop) for i in range(3)]
    torch.testing.assert_close(b.null_embs, torch.cat([s.null_embs for s in singles], 1), rtol=0, atol=1e-5)
    torch.testing.assert_close(b.z_T, torch.cat([s.z_T for s in singles]), rtol=0, atol=1e-5)
    torch.testing.assert_close(b.losses, torch.cat([s.losses for s in singles], 1), rtol=0, atol=1e-6)


def test_paper_reconstruction_beats_plain_cfg(tiny_pipe, z0):
    pipe = copy.deepcopy(tiny_pipe)
    with torch.no_grad():  # a smoother model, on which DDIM inversion is nearly exact at CFG 1
        pipe.unet.conv_out.weight.mul_(0.1)
        pipe.unet.conv_out.bias.mul_(0.1)
    emb = pipe.encode_prompts(PROMPTS[:2])
    steps = 10
    res = nti_invert(pipe, z0[:2], emb, steps)
    rec = ddim_sample(pipe, res.z_T, emb, steps, guidance=7.5, null_embs=res.null_embs)
    plain = ddim_sample(pipe, res.z_T, emb, steps, guidance=7.5)
    err_nti, err_plain = float(((rec - z0[:2]) ** 2).mean()), float(((plain - z0[:2]) ** 2).mean())
    assert err_nti < 0.3 * err_plain, (err_nti, err_plain)  # measured 0.014 vs 0.075


def test_official_mode_matches_official_loop(pipe64, z0):
    steps = 4
    emb = pipe64.encode_prompts(PROMPTS[:1])
    res = nti_invert(pipe64, z0[:1], emb, steps, mode="official")
    traj = ddim_trajectory_t1(pipe64, z0[:1], emb, steps)
    assert torch.equal(res.z_T, traj[-1])  # plain DDIM inversion (from t=1), as the official code
    assert res.guidance == 1.0 and res.stop_at_t1 and res.null_embs.shape == (steps - 1, 1, 77, 32)
    # the official loop: one Adam for all timesteps, `steps` updates each, latent = last prediction
    sched = ddim_scheduler(steps)
    null = empty_embedding(pipe64, 1).float().clone().requires_grad_(True)
    opt = torch.optim.Adam([null], lr=1e-2)
    latent, nulls = traj[-1], []
    for t, target in zip(sched.timesteps, reversed(traj[:-1])):
        with torch.no_grad():
            e_c = pipe64.eps(latent, t, emb)
        for _ in range(steps):
            e_u = pipe64.eps(latent, t, null)
            pred = sched.step(e_u + 7.5 * (e_c - e_u), t, latent).prev_sample
            F.mse_loss(pred, target).backward()
            opt.step()
            opt.zero_grad()
        nulls.append(null.detach().clone())
        latent = pred.detach()
    torch.testing.assert_close(res.null_embs, torch.stack(nulls), rtol=0, atol=1e-4)
    # reconstruction at guidance 1 ignores the embeddings: plain DDIM sampling back to t=1
    rec = ddim_sample(pipe64, res.z_T, emb, steps, guidance=res.guidance, null_embs=res.null_embs, stop_at_t1=True)
    torch.testing.assert_close(rec, ddim_sample(pipe64, res.z_T, emb, steps, stop_at_t1=True), rtol=0, atol=0)


def test_bad_mode_is_rejected(tiny_pipe, z0):
    with pytest.raises(ValueError, match="mode"):
        nti_invert(tiny_pipe, z0, tiny_pipe.encode_prompts(PROMPTS), 4, mode="fast")
