"""invert_images / invert_latents: encoding choice and official draw order, reconstruction wiring,
progress, config validation."""
from __future__ import annotations

import pytest
import torch

from memtui.engine.diffusion.noise import noise_from_generators
from memtui.engine.inversion import (InversionConfig, NTIOptions, RenoiseConfig, ddim_invert, ddim_sample,
                                     invert_images, invert_latents, renoise_invert)

pytestmark = pytest.mark.usefixtures("_one_thread")  # single-threaded torch: see tests/conftest.py

PROMPTS = ["a red circle", "a photo of a dog"]



@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_renoise_encodes_a_posterior_sample_in_official_draw_order(tiny_pipe, images):
    cfg = InversionConfig(method="renoise", steps=4, seed=42)
    seen: list[tuple[int, int]] = []
    out = invert_images(tiny_pipe, images, PROMPTS, cfg, progress=lambda d, n: seen.append((d, n)))
    gens = [torch.Generator().manual_seed(42) for _ in range(2)]
    z0 = tiny_pipe.encode_images(images, noise=noise_from_generators(gens, (4, 8, 8)))
    torch.testing.assert_close(out.z_0, z0, rtol=0, atol=1e-6)
    assert float((z0 - tiny_pipe.encode_images(images)).abs().max()) > 1e-3  # a sample, not the mean
    for g in gens:  # the two unused randn draws of the img2img pipeline
        torch.randn(z0.shape[1:], generator=g)
        torch.randn(z0.shape[1:], generator=g)
    emb = tiny_pipe.encode_prompts(PROMPTS)
    zT = renoise_invert(tiny_pipe, z0, emb, 4, RenoiseConfig(), gens)
    torch.testing.assert_close(out.z_T, zT, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.z_0_hat, ddim_sample(tiny_pipe, zT, emb, 4), rtol=0, atol=1e-6)
    assert out.images_hat.shape == (2, 3, 32, 32) and out.images_hat.dtype == torch.float32
    assert float(out.images_hat.abs().max()) <= 1.0
    decoded = tiny_pipe.decode_latents(out.z_0_hat).clamp(-1, 1)
    torch.testing.assert_close(out.images_hat, decoded, rtol=0, atol=1e-6)
    assert seen[-1] == (8, 8) and [d for d, _ in seen] == list(range(1, 9))


def test_ddim_uses_posterior_mean_and_cfg_reconstruction(tiny_pipe, images):
    cfg = InversionConfig(method="ddim", steps=4, guidance=3.0)
    out = invert_images(tiny_pipe, images, PROMPTS, cfg)
    z0 = tiny_pipe.encode_images(images)
    torch.testing.assert_close(out.z_0, z0, rtol=0, atol=1e-6)
    emb = tiny_pipe.encode_prompts(PROMPTS)
    torch.testing.assert_close(out.z_T, ddim_invert(tiny_pipe, z0, emb, 4), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.z_0_hat, ddim_sample(tiny_pipe, out.z_T, emb, 4, guidance=3.0), rtol=0, atol=1e-6)
    assert out.extras == {}


def test_nti_official_via_latents_is_plain_ddim(tiny_pipe):
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    cfg = InversionConfig(method="nti", options=NTIOptions(mode="official"), steps=3)
    out = invert_latents(tiny_pipe, z0, PROMPTS, cfg)
    assert out.extras["null_embs"].shape == (2, 2, 77, 32)
    emb = tiny_pipe.encode_prompts(PROMPTS)
    torch.testing.assert_close(out.z_0_hat, ddim_sample(tiny_pipe, out.z_T, emb, 3, stop_at_t1=True), rtol=0, atol=0)


def test_config_round_trip_and_validation():
    cfg = InversionConfig(method="renoise", steps=20, options=RenoiseConfig(num_renoise_steps=2))
    d = cfg.to_dict()
    assert d["renoise"]["num_renoise_steps"] == 2
    assert InversionConfig.from_dict(d) == cfg
    nti = InversionConfig(method="nti", steps=20, options=NTIOptions(mode="official"))
    assert InversionConfig.from_dict(nti.to_dict()) == nti
    # the keys run specs used before the registry: flat nti_* keys, a renoise table for every method
    legacy = {"method": "nti", "steps": 20, "seed": 42, "encode": "auto", "guidance": 1.0, "nti_mode": "official",
              "nti_guidance": 7.5, "nti_inner_steps": None, "renoise": {"num_renoise_steps": 2}}
    assert InversionConfig.from_dict(legacy) == nti
    assert InversionConfig().resolved_encode == "sample"
    assert InversionConfig(method="nti").resolved_encode == "mean"
    for bad, msg in [({"method": "sdedit"}, "method"), ({"steps": 0}, "steps"), ({"encode": "median"}, "encode"),
                     ({"nti_mode": "fast"}, "nti_mode"), ({"seeds": 1}, "unknown"),
                     ({"renoise": {"num_renoise_steps": -1}}, "num_renoise_steps"), ({"guidance": "high"}, "guidance")]:
        with pytest.raises(ValueError, match=msg):
            InversionConfig.from_dict(bad)


def test_prompt_count_must_match(tiny_pipe, images):
    with pytest.raises(ValueError, match="one prompt"):
        invert_images(tiny_pipe, images, PROMPTS[:1], InversionConfig(steps=2))
