"""DDIM inversion / sampling against hand-computed schedules and diffusers' DDIMScheduler."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from memtui.engine.inversion import ddim_invert, ddim_sample, ddim_trajectory, ddim_trajectory_t1
from tests.inversion.schedule import sd14_alphas_cumprod

pytestmark = pytest.mark.usefixtures("_one_thread")  # single-threaded torch: see tests/conftest.py

PROMPTS = ["a red circle", "a blue square", "a photo of a dog"]



@pytest.fixture(scope="module")
def emb(tiny_pipe) -> torch.Tensor:
    return tiny_pipe.encode_prompts(PROMPTS)


@pytest.fixture(scope="module")
def smooth_pipe(tiny_pipe):
    """The tiny pipeline with its UNet output layer scaled down: eps is small and smooth in z."""
    pipe = copy.deepcopy(tiny_pipe)
    with torch.no_grad():
        pipe.unet.conv_out.weight.mul_(0.02)
        pipe.unet.conv_out.bias.mul_(0.02)
    return pipe


def test_inverse_steps_match_hand_formula(tiny_pipe, z0, emb):
    steps = 10
    traj = ddim_trajectory(tiny_pipe, z0, emb, steps)
    assert len(traj) == steps + 1
    ac = sd14_alphas_cumprod()
    ts = [1 + 100 * k for k in range(steps)]  # leading spacing + offset 1, ascending
    for k, t in enumerate(ts):
        a_t = ac[t]
        a_prev = ac[t - 100] if t >= 100 else ac[0]
        z_prev = traj[k]
        e = tiny_pipe.eps(z_prev, t, emb).double().numpy()
        want = (np.sqrt(a_t / a_prev) * z_prev.double().numpy()
                + (np.sqrt(1 - a_t) - np.sqrt(a_t / a_prev) * np.sqrt(1 - a_prev)) * e)
        np.testing.assert_allclose(traj[k + 1].numpy(), want, rtol=0, atol=2e-5)
    assert torch.equal(ddim_invert(tiny_pipe, z0, emb, steps), traj[-1])


def test_official_nti_inversion_starts_at_t1(tiny_pipe, z0, emb):
    steps = 5
    traj = ddim_trajectory_t1(tiny_pipe, z0, emb, steps)
    assert len(traj) == steps  # 4 steps 1 -> 201 -> ... -> 801
    ac = sd14_alphas_cumprod()
    t, t_next = 201, 401
    e = tiny_pipe.eps(traj[1], t, emb).double().numpy()  # eps at the *current* timestep
    f = (traj[1].double().numpy() - np.sqrt(1 - ac[t]) * e) / np.sqrt(ac[t])
    want = np.sqrt(ac[t_next]) * f + np.sqrt(1 - ac[t_next]) * e
    np.testing.assert_allclose(traj[2].numpy(), want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_sampling_matches_diffusers_ddim_step(tiny_pipe, z0, emb, guidance):
    steps = 8
    uncond = tiny_pipe.encode_prompts(["", "", ""])
    ours = ddim_sample(tiny_pipe, z0, emb, steps, guidance=guidance, uncond_emb=uncond)
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                          beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                          steps_offset=1, timestep_spacing="leading")
    sched.set_timesteps(steps)
    z = z0.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            e_c = tiny_pipe.eps(z, t, emb)
            e = e_c if guidance == 1.0 else tiny_pipe.eps(z, t, uncond) + guidance * (e_c - tiny_pipe.eps(z, t, uncond))
            z = sched.step(e, t, z, eta=0.0).prev_sample
    torch.testing.assert_close(ours, z, rtol=1e-5, atol=1e-4 * float(z.abs().max()))


def test_null_embs_are_used_per_step(tiny_pipe, z0, emb):
    steps = 4
    uncond = tiny_pipe.encode_prompts(["", "", ""])
    same = ddim_sample(tiny_pipe, z0, emb, steps, guidance=5.0, null_embs=uncond.float().expand(steps, -1, -1, -1))
    ref = ddim_sample(tiny_pipe, z0, emb, steps, guidance=5.0, uncond_emb=uncond)
    torch.testing.assert_close(same, ref, rtol=0, atol=1e-6)
    with pytest.raises(ValueError):
        ddim_sample(tiny_pipe, z0, emb, steps, guidance=5.0, null_embs=uncond.float().expand(3, -1, -1, -1))


def test_batch_equals_single(tiny_pipe, z0, emb):
    steps = 10
    zb = ddim_invert(tiny_pipe, z0, emb, steps)
    zs = torch.cat([ddim_invert(tiny_pipe, z0[i:i + 1], emb[i:i + 1], steps) for i in range(3)])
    torch.testing.assert_close(zb, zs, rtol=0, atol=1e-5)
    xb = ddim_sample(tiny_pipe, zb, emb, steps, guidance=7.5)
    xs = torch.cat([ddim_sample(tiny_pipe, zb[i:i + 1], emb[i:i + 1], steps, guidance=7.5) for i in range(3)])
    torch.testing.assert_close(xb, xs, rtol=1e-5, atol=1e-5 * float(xb.abs().max()))


def test_invert_then_sample_round_trip_on_smooth_model(smooth_pipe, z0, emb):
    zT = ddim_invert(smooth_pipe, z0, emb, 50)
    back = ddim_sample(smooth_pipe, zT, emb, 50)
    # the seed is far from the latent (a real noising), yet sampling comes back to it
    assert float((zT - z0).abs().max()) > 1.0
    err = float((back - z0).abs().max())
    assert err < 0.025, err  # measured 0.0166 (max over 768 entries) with the output layer at 2 %


def test_bf16_is_finite_and_close_to_fp32(tiny_pipe, z0, emb):
    pipe16 = copy.deepcopy(tiny_pipe).to(dtype=torch.bfloat16)
    z32 = ddim_invert(tiny_pipe, z0, emb, 5)
    z16 = ddim_invert(pipe16, z0, emb, 5)
    assert z16.dtype == torch.float32 and torch.isfinite(z16).all()
    rel = float((z16 - z32).norm() / z32.norm())
    assert rel < 0.05, rel
