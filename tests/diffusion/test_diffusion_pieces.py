"""The shared diffusion pieces against independent computations: the DDIM step against diffusers'
DDIMScheduler, the sampler's partial runs and broadcasting, classifier-free guidance, the two
seeded-noise semantics, and the one list of schedule keys."""
from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from memtui.engine.diffusion.ddim import ddim_sample, ddim_step, generate_images, schedule
from memtui.engine.diffusion.guidance import combine, empty_embedding, guided_eps
from memtui.engine.diffusion.noise import (initial_noise, item_generators, noise_from_generator,
                                           noise_from_generators, repeated_generators, seed_noise)
from memtui.engine.diffusion.samplers import make_sampler
from memtui.engine.model.schedule import SCHEDULE_KEYS, alpha, alpha_prev, make_ddim, noise_schedule

PROMPTS = ["a red circle", "a blue square"]


@pytest.fixture(scope="module")
def z() -> torch.Tensor:
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))


def test_ddim_step_is_diffusers_step_and_its_own_inverse(tiny_pipe, z) -> None:
    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(10)
    e = torch.randn(z.shape, generator=torch.Generator().manual_seed(4))
    for t in (901, 501, 1):
        want = sched.step(e, t, z).prev_sample
        got = ddim_step(z, e, alpha(sched, t), alpha_prev(sched, t, 10))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        back = ddim_step(got, e, alpha_prev(sched, t, 10), alpha(sched, t))
        torch.testing.assert_close(back, z, rtol=0, atol=1e-5)


def test_partial_runs_and_broadcast_prompt(tiny_pipe, z) -> None:
    cond = tiny_pipe.encode_prompts(PROMPTS[:1])
    full = ddim_sample(tiny_pipe, z, cond.expand(2, -1, -1), 6, guidance=3.0)
    assert torch.equal(ddim_sample(tiny_pipe, z, cond, 6, guidance=3.0), full)  # [1, L, D] broadcasts
    assert torch.equal(ddim_sample(tiny_pipe, z, cond, 6, stop=0), z)
    _, ts = schedule(tiny_pipe, 6)
    by_hand = z.clone()
    sched = tiny_pipe.make_scheduler()
    for t in ts[:4]:
        e = guided_eps(tiny_pipe, by_hand, t, cond, 3.0, empty_embedding(tiny_pipe, 1))
        by_hand = ddim_step(by_hand, e, alpha(sched, t), alpha_prev(sched, t, 6))
    torch.testing.assert_close(ddim_sample(tiny_pipe, z, cond, 6, guidance=3.0, stop=4), by_hand, rtol=0, atol=0)
    assert torch.equal(ddim_sample(tiny_pipe, z, cond, 6, stop_at_t1=True), ddim_sample(tiny_pipe, z, cond, 6, stop=5))


def test_guidance(tiny_pipe, z) -> None:
    emb, unc = tiny_pipe.encode_prompts(PROMPTS), tiny_pipe.encode_prompts(["", ""])
    with torch.no_grad():
        e_c, e_u = tiny_pipe.eps(z, 501, emb), tiny_pipe.eps(z, 501, unc)
        assert torch.equal(guided_eps(tiny_pipe, z, 501, emb, 1.0), e_c)
        for g in (1.0, 4.0):
            torch.testing.assert_close(guided_eps(tiny_pipe, z, 501, emb, g, unc, both=True), e_u + g * (e_c - e_u),
                                       rtol=1e-5, atol=1e-5)
        rows = torch.tensor([2.0, 7.5]).view(2, 1, 1, 1)
        per_row = guided_eps(tiny_pipe, z, 501, emb, rows, unc)
        for i, g in enumerate((2.0, 7.5)):
            torch.testing.assert_close(per_row[i:i + 1], guided_eps(tiny_pipe, z[i:i + 1], 501, emb[i:i + 1], g, unc[:1]),
                                       rtol=1e-5, atol=1e-5)
    assert torch.equal(combine(e_u, e_c, -2.0), e_u - 2.0 * (e_c - e_u))  # ESD's target, exactly
    with pytest.raises(ValueError, match="unconditional"):
        guided_eps(tiny_pipe, z, 501, emb, 3.0)


def test_noise_semantics() -> None:
    rows = initial_noise([5, 9], (4, 8, 8))
    assert rows.shape == (2, 4, 8, 8) and rows.dtype == torch.float32
    assert torch.equal(rows[1], torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(9)))
    assert torch.equal(noise_from_generators(item_generators([5, 9]), (4, 8, 8)), rows)
    same = noise_from_generators(repeated_generators(3, 42), (4, 8, 8))
    assert torch.equal(same[0], same[2])
    block = seed_noise(7, 3, (4, 8, 8))
    assert torch.equal(block, torch.randn((3, 4, 8, 8), generator=torch.Generator().manual_seed(7)))
    g = torch.Generator().manual_seed(7)
    assert torch.equal(noise_from_generator(g, 3, (4, 8, 8)), block) and not torch.equal(noise_from_generator(g, 3, (4, 8, 8)), block)


def test_generate_images_draws_one_block_and_batches_transparently(tiny_pipe) -> None:
    x = generate_images(tiny_pipe, "a red circle", 3, seed=2, steps=4, guidance=4.0)
    assert x.shape == (3, 3, 32, 32) and float(x.abs().max()) <= 1.0
    cond, unc = tiny_pipe.encode_prompts(["a red circle"]), tiny_pipe.encode_prompts([""])
    z = ddim_sample(tiny_pipe, seed_noise(2, 3, (4, 8, 8)), cond, 4, 4.0, uncond_emb=unc)
    torch.testing.assert_close(x, tiny_pipe.decode_latents(z).clamp(-1, 1), rtol=0, atol=0)
    torch.testing.assert_close(generate_images(tiny_pipe, "a red circle", 3, seed=2, steps=4, batch_size=2), x,
                               rtol=1e-5, atol=1e-5)


def test_one_list_of_schedule_keys() -> None:
    cfg = {"_class_name": "PNDMScheduler", "beta_start": 0.001, "beta_end": 0.02, "beta_schedule": "scaled_linear",
           "num_train_timesteps": 1000, "steps_offset": 0, "skip_prk_steps": True, "trained_betas": None}
    assert noise_schedule(cfg) == {"beta_start": 0.001, "beta_end": 0.02, "beta_schedule": "scaled_linear",
                                   "num_train_timesteps": 1000}
    assert "steps_offset" not in SCHEDULE_KEYS
    # DDIM of the model follows its steps_offset (SD 1.x: 1 -> 981..1); samplers keep their own
    ddim = make_ddim(cfg)
    assert ddim.config.beta_end == 0.02 and ddim.config.steps_offset == 0
    ddim.set_timesteps(50)
    assert int(ddim.timesteps[0]) == 980 and int(ddim.timesteps[-1]) == 0
    assert make_sampler("ddim", cfg).config.steps_offset == 1 and make_sampler("pndm", cfg).config.steps_offset == 1
    assert make_sampler("lms", cfg).config.beta_end == 0.02
