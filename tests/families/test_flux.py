"""Flux.1 as an ε-model: the packing and σ grid against diffusers' own code, DDIM steps as exact
Euler steps of the flow ODE (against an Euler integration written here from the velocity), the
plain-Euler inversion, fixed-point inversion undoing the sampler, generation equal to diffusers'
FluxPipeline, and Flux checkpoints (transformer state dicts, folders) detected, loaded and refused
on other families. Tiny random-weight models built with the real diffusers/transformers classes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline as DiffusersFlux
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from memtui.engine.diffusion.ddim import ddim_sample, schedule
from memtui.engine.diffusion.samplers import sample
from memtui.engine.inversion.ddim import ddim_invert
from memtui.engine.inversion.fpi import fpi_invert
from memtui.engine.model.families.flux import FLUX_DEFAULT_SCHEDULER, flow_shift, pack_latents, shifted_sigma, unpack_latents
from memtui.engine.model.loading import CheckpointMismatchError, inspect_checkpoint, load_ablated, load_base
from memtui.engine.model.loading.lora import diffusers_pipeline
from memtui.engine.testkit import save_state_dict, tiny_flux_pipeline, tiny_pipeline

pytestmark = pytest.mark.usefixtures("_one_thread")
PROMPTS = ["a photo of a dog", "a red circle"]


@pytest.fixture(scope="module")
def flux():
    return tiny_flux_pipeline(seed=5)


def _sigma(pipe, t: float, px: int | None = None) -> float:
    """σ(t) written from the definitions: diffusers' calculate_shift for μ at the token count of
    ``px`` (default the native size; 2×2 packing of the tiny VAE's 4× latents: 8 px per token)."""
    side = (px or pipe.image_size) // 8
    mu = calculate_shift(side * side)
    u = t / 1000
    return math.exp(mu) * u / (1 + (math.exp(mu) - 1) * u)


def _r(s: float) -> float:
    return math.sqrt((1 - s) ** 2 + s ** 2)


def test_packing_matches_diffusers() -> None:
    z = torch.randn(2, 16, 6, 10)
    packed = pack_latents(z)
    torch.testing.assert_close(packed, DiffusersFlux._pack_latents(z, 2, 16, 6, 10), rtol=0, atol=0)
    torch.testing.assert_close(unpack_latents(packed, 6, 10), DiffusersFlux._unpack_latents(packed, 48, 80, 8), rtol=0, atol=0)
    with pytest.raises(ValueError, match="even"):
        pack_latents(torch.randn(1, 16, 5, 4))


@pytest.mark.parametrize("tokens", [16, 256, 1024, 4096])
def test_sigma_grid_matches_flow_match_euler(tokens) -> None:
    sigmas = np.linspace(1.0, 1 / 7, 7)
    sched = FlowMatchEulerDiscreteScheduler(**FLUX_DEFAULT_SCHEDULER)
    sched.set_timesteps(sigmas=sigmas, mu=calculate_shift(tokens))
    ours = shifted_sigma(torch.tensor(sigmas, dtype=torch.float64), flow_shift(FLUX_DEFAULT_SCHEDULER, tokens))
    np.testing.assert_allclose(sched.sigmas[:-1].numpy(), ours.numpy(), rtol=0, atol=1e-6)
    static = FlowMatchEulerDiscreteScheduler(shift=3.0)
    static.set_timesteps(sigmas=sigmas)
    np.testing.assert_allclose(static.sigmas[:-1].numpy(), shifted_sigma(torch.tensor(sigmas), 3.0).numpy(), atol=1e-6)


def test_ddim_sampling_is_euler_on_the_flow_ode(flux) -> None:
    emb = flux.encode_prompts(PROMPTS)
    zT = torch.randn(2, *flux.latent_shape(), generator=torch.Generator().manual_seed(1))
    steps = 5
    _, ts = schedule(flux, steps)
    sig = [_sigma(flux, t) for t in ts] + [0.0]  # the last DDIM step goes to alphas_cumprod[0] = clean
    x = zT.double() * _r(sig[0])
    for i in range(steps):
        v = flux.velocity(x.float(), torch.full((2,), sig[i]), emb).double()
        x = x + (sig[i + 1] - sig[i]) * v
    torch.testing.assert_close(ddim_sample(flux, zT, emb, steps).double(), x, rtol=0, atol=2e-5)


def test_the_grid_follows_the_run_image_size() -> None:
    pipe = tiny_flux_pipeline(seed=5)
    pipe.use_image_size(64)  # 64 tokens instead of the native 16: a larger shift, as FluxPipeline's
    emb = pipe.encode_prompts(PROMPTS)
    zT = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    _, ts = schedule(pipe, 4)
    sig = [_sigma(pipe, t, 64) for t in ts] + [0.0]
    assert sig[1] > _sigma(pipe, ts[1])
    x = zT.double() * _r(sig[0])
    for i in range(4):
        x = x + (sig[i + 1] - sig[i]) * pipe.velocity(x.float(), torch.full((2,), sig[i]), emb).double()
    torch.testing.assert_close(ddim_sample(pipe, zT, emb, 4).double(), x, rtol=0, atol=2e-5)


def test_plain_euler_inversion(flux) -> None:
    emb = flux.encode_prompts(PROMPTS)
    z0 = torch.randn(2, *flux.latent_shape(), generator=torch.Generator().manual_seed(2))
    steps = 4
    _, ts = schedule(flux, steps)
    levels = [0.0] + [_sigma(flux, t) for t in reversed(ts)]
    x = z0.double()
    for s_from, s_to in zip(levels, levels[1:]):  # forward in σ, velocity at the start of each step
        x = x + (s_to - s_from) * flux.velocity(x.float(), torch.full((2,), s_from), emb).double()
    ours = ddim_invert(flux, z0, emb, steps, eval_at="current")
    torch.testing.assert_close(ours.double(), x / _r(levels[-1]), rtol=0, atol=2e-5)
    # the default reads the network at the target level, as SD's DDIM inversion: another first-order scheme
    assert (ddim_invert(flux, z0, emb, steps) - ours).abs().max() > 1e-4


def test_fixed_point_inversion_undoes_the_euler_sampler(flux) -> None:
    emb = flux.encode_prompts(PROMPTS)
    z0 = torch.randn(2, *flux.latent_shape(), generator=torch.Generator().manual_seed(3))
    steps = 6
    plain = ddim_sample(flux, ddim_invert(flux, z0, emb, steps), emb, steps)
    zT = fpi_invert(flux, z0, emb, steps, iterations=30, tolerance=0.0).z_T
    fixed = ddim_sample(flux, zT, emb, steps)
    err_plain, err_fixed = (plain - z0).abs().max().item(), (fixed - z0).abs().max().item()
    assert err_fixed < 1e-3 < err_plain, (err_plain, err_fixed)
    assert zT.shape == (2, 16, 8, 8)


@pytest.mark.parametrize("guidance_embeds", [True, False])  # FLUX.1-dev (distilled guidance) and schnell
def test_generation_equals_diffusers_flux_pipeline(guidance_embeds) -> None:
    shift = FLUX_DEFAULT_SCHEDULER if guidance_embeds else {"num_train_timesteps": 1000, "shift": 1.0,
                                                            "use_dynamic_shifting": False}
    pipe = tiny_flux_pipeline(seed=4, guidance_embeds=guidance_embeds, shift=shift)
    ours = sample(pipe, PROMPTS, [3, 4], guidance=[3.5, 2.0], sampler="flow_euler", steps=5)
    dp = diffusers_pipeline(pipe)
    dp.set_progress_bar_config(disable=True)
    for i, (prompt, seed, g) in enumerate(zip(PROMPTS, (3, 4), (3.5, 2.0))):
        ref = dp(prompt, height=32, width=32, num_inference_steps=5, guidance_scale=g, max_sequence_length=16,
                 generator=torch.Generator().manual_seed(seed), output_type="np").images[0]
        ref = (ref * 255).round().clip(0, 255).astype(np.uint8)
        assert np.abs(ours[i].astype(int) - ref.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="flow_euler"):
        sample(pipe, PROMPTS[:1], [0], sampler="lms", steps=2)
    with pytest.raises(ValueError, match="multiple of 8"):  # 2x2 packing of the tiny VAE's 4x latents
        sample(pipe, PROMPTS[:1], [0], sampler="flow_euler", steps=2, height=20, width=20)


def test_flow_euler_is_refused_on_a_noise_prediction_model() -> None:
    with pytest.raises(ValueError, match="noise-prediction model"):
        sample(tiny_pipeline(family="sd1"), PROMPTS[:1], [0], sampler="flow_euler", steps=2)


def test_saved_folder_loads_as_the_same_model(flux, tmp_path) -> None:
    from memtui.engine.testkit import save_pipeline

    folder = save_pipeline(flux, tmp_path / "flux")
    pipe = load_base(folder)
    assert pipe.family == "flux" and pipe.image_size == 32 and pipe.latent_shape() == (16, 8, 8)
    z = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pipe.eps(z, 501, pipe.encode_prompts(["a dog", ""])),
                               flux.eps(z, 501, flux.encode_prompts(["a dog", ""])), rtol=0, atol=1e-6)
    info = inspect_checkpoint(folder)
    assert info["family"] == "flux" and "transformer" in info["components"] and "text_encoder_2" in info["components"]


def test_a_folder_written_by_diffusers_loads_as_diffusers_loads_it(tmp_path) -> None:
    """FluxPipeline.save_pretrained's own layout (image_encoder/feature_extractor null, T5TokenizerFast)
    read by memtui and by FluxPipeline.from_pretrained: the same images."""
    pipe = tiny_flux_pipeline(seed=6)
    folder = tmp_path / "FLUX.1-dev"
    diffusers_pipeline(pipe).save_pretrained(folder)
    ours = load_base(folder)
    assert ours.family == "flux" and type(ours.tokenizer_2).__name__.startswith("T5Tokenizer")
    assert ours.image_size == 128 * ours.vae_scale and ours.max_sequence_length == 512  # FluxPipeline's defaults
    theirs = DiffusersFlux.from_pretrained(folder, local_files_only=True)
    theirs.set_progress_bar_config(disable=True)
    mine = sample(ours, PROMPTS[:1], [7], guidance=3.5, sampler="flow_euler", steps=3, height=32, width=32)
    ref = theirs(PROMPTS[0], height=32, width=32, num_inference_steps=3, guidance_scale=3.5,
                 generator=torch.Generator().manual_seed(7), output_type="np").images[0]
    assert np.abs(mine[0].astype(int) - (ref * 255).round().clip(0, 255).astype(int)).max() <= 1


def test_vae_shift_and_scale_round_trip(flux) -> None:
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    dist = flux.vae.encode(img).latent_dist
    z = flux.encode_images(img)
    torch.testing.assert_close(z, (dist.mean - 0.1159) * 0.3611, rtol=0, atol=1e-6)
    torch.testing.assert_close(flux.decode_latents(z), flux.vae.decode(dist.mean).sample, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------- checkpoints
def test_partial_transformer_state_dict_loads_and_reports(flux, tmp_path) -> None:
    erased = tiny_flux_pipeline(seed=9)
    sd = {k: v for k, v in erased.unet.state_dict().items() if ".attn." in k and "single" not in k}
    f = save_state_dict(sd, tmp_path / "esd-flux.safetensors")
    info = inspect_checkpoint(f)
    assert info["kind"] == "transformer" and info["family"] == "flux" and info["components"] == ["transformer"]
    base = tiny_flux_pipeline(seed=5)
    differ = {f"transformer.{k}" for k, v in sd.items() if not torch.equal(base.unet.state_dict()[k], v)}
    report = load_ablated(base, f)
    assert report.kind == "transformer" and report.components == ["transformer"] and report.n_loaded == len(sd)
    assert set(report.changed_tensors) == differ and len(differ) > 10 and report.missing_keys
    for k, v in sd.items():
        assert torch.equal(base.unet.state_dict()[k], v)
    prefixed = save_state_dict({f"transformer.{k}": v for k, v in sd.items()}, tmp_path / "prefixed.safetensors")
    assert set(load_ablated(tiny_flux_pipeline(seed=5), prefixed).changed_tensors) == differ


def test_a_partial_bfl_state_dict_is_refused_with_the_reason(tmp_path) -> None:
    from memtui.engine.model.loading import UnsupportedCheckpointError

    f = save_state_dict({"double_blocks.0.img_attn.qkv.weight": torch.zeros(96, 32)}, tmp_path / "bfl.safetensors")
    assert inspect_checkpoint(f)["kind"] == "transformer" and inspect_checkpoint(f)["family"] == "flux"
    pipe = tiny_flux_pipeline(seed=5)
    with pytest.raises(UnsupportedCheckpointError, match="original BFL names.*diffusers' names"):
        load_ablated(pipe, f)


def test_transformer_folder_and_erased_pipeline_folder(tmp_path) -> None:
    from memtui.engine.testkit import save_pipeline

    erased = tiny_flux_pipeline(seed=9)
    erased.unet.save_pretrained(tmp_path / "transformer")
    assert inspect_checkpoint(tmp_path / "transformer")["kind"] == "transformer_folder"
    base = tiny_flux_pipeline(seed=5)
    report = load_ablated(base, tmp_path / "transformer")
    assert report.kind == "transformer_folder" and report.changed_components == ["transformer"]
    folder = save_pipeline(erased, tmp_path / "erased-pipe")
    report = load_ablated(tiny_flux_pipeline(seed=5), folder)
    assert report.kind == "pipeline" and sorted(report.changed_components) == ["text_encoder", "text_encoder_2", "transformer", "vae"]


@pytest.mark.parametrize("ckpt,base", [("flux", "sd1"), ("sd1", "flux"), ("sdxl", "flux")])
def test_cross_family_checkpoints_are_refused_naming_both(ckpt, base, tmp_path) -> None:
    titles = {"flux": "Flux.1 (flux)", "sd1": "Stable Diffusion 1.x (sd1)", "sdxl": "Stable Diffusion XL (sdxl)"}
    other = tiny_pipeline(seed=9, family=ckpt)
    f = save_state_dict(other.unet.state_dict(), tmp_path / "denoiser.safetensors")
    pipe = tiny_pipeline(seed=5, family=base)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:
        load_ablated(pipe, f)
    assert titles[ckpt] in str(err.value) and titles[base] in str(err.value) and "Nothing was changed" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())


def test_embedded_guidance_flag_reaches_the_transformer(tmp_path, capsys) -> None:
    """``--embedded-guidance`` is the distilled guidance of every inversion call on FLUX.1-dev (other
    seeds than the default 3.5); on a base without a guidance embedding the loaded event says so."""
    import json

    from memtui.cli import main
    from memtui.engine.testkit import save_pipeline
    from tests.helpers import make_captions_set

    erased, ref = make_captions_set(tmp_path / "erased", 2, 0), make_captions_set(tmp_path / "reference", 2, 1)
    flux_dir = save_pipeline(tiny_flux_pipeline(seed=5), tmp_path / "flux")
    sd_dir = save_pipeline(tiny_pipeline(seed=5), tmp_path / "sd1")

    def run(base, out, *extra):
        assert main(["--batch", "--base", str(base), "--erased", str(erased), "--reference", str(ref),
                     "--method", "ddim", "--steps", "3", "--device", "cpu", "--out", str(out), *extra]) == 0
        loaded = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines() if '"loaded"' in x][0]
        recs = {r["item_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
        return loaded, recs

    loaded, default = run(flux_dir, tmp_path / "g35")
    assert loaded["embedded_guidance"] == 3.5 and "message" not in loaded
    loaded, one = run(flux_dir, tmp_path / "g1", "--embedded-guidance", "1")
    assert loaded["embedded_guidance"] == 1.0 and loaded["inversion"]["embedded_guidance"] == 1.0
    assert json.loads((tmp_path / "g1" / "spec.json").read_text())["inversion"]["embedded_guidance"] == 1.0
    assert all(abs(one[k]["nll"] - default[k]["nll"]) > 1e-6 for k in one)
    loaded, _ = run(sd_dir, tmp_path / "sd", "--embedded-guidance", "2")
    assert loaded["embedded_guidance"] is None and "ignored" in loaded["message"]
    capsys.readouterr()
