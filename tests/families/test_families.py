"""Model families: detection from the folder, loading, v-prediction converted to ε, SDXL's packed
conditioning and added time ids, and cross-family checkpoints refused before anything changes.
Everything on tiny random-weight models built from configs with the real diffusers/transformers
classes; the reference numbers come from diffusers' own schedulers and direct UNet calls."""
from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler

from memtui.engine.diffusion.ddim import ddim_sample, schedule
from memtui.engine.inversion.ddim import ddim_invert
from memtui.engine.model.families import checkpoint_families, detect_family, family_names
from memtui.engine.model.loading import CheckpointMismatchError, UnsupportedCheckpointError, load_ablated, load_base
from memtui.engine.testkit import save_state_dict, tiny_pipeline

pytestmark = pytest.mark.usefixtures("_one_thread")


def test_registry_lists_the_families_in_order() -> None:
    assert family_names()[:4] == ("sd1", "sd2", "sdxl", "flux")


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "flux"])
def test_detected_and_loaded_like_the_saved_model(family, family_dirs) -> None:
    assert detect_family(family_dirs[family]).name == family
    pipe = load_base(family_dirs[family])
    ref = tiny_pipeline(seed=3, family=family)
    assert pipe.family == family and type(pipe) is type(ref)
    assert pipe.prediction_type == {"sd2": "v_prediction", "flux": "flow"}.get(family, "epsilon")
    z = torch.randn(2, *pipe.latent_shape(), generator=torch.Generator().manual_seed(0))
    prompts = ["a red circle", ""]
    torch.testing.assert_close(pipe.eps(z, 501, pipe.encode_prompts(prompts)),
                               ref.eps(z, 501, ref.encode_prompts(prompts)), rtol=0, atol=1e-6)


def test_unknown_and_unsupported_pipelines_are_named(tmp_path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    with pytest.raises(UnsupportedCheckpointError, match=r"StableDiffusion3Pipeline — Stable Diffusion 3 .* not a family memtui loads yet.*flux"):
        detect_family(tmp_path)


# ---------------------------------------------------------------------------- v-prediction
class VFromEps(torch.nn.Module):
    """A v-prediction network made from an ε one with diffusers' own schedule: v = √ᾱ·ε − √(1−ᾱ)·x₀."""

    def __init__(self, unet: torch.nn.Module, alphas: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.alphas = unet, alphas.double()

    @property
    def device(self):
        return self.inner.device

    @property
    def dtype(self):
        return self.inner.dtype

    @property
    def config(self):
        return self.inner.config

    def forward(self, z, t, encoder_hidden_states, **kw):
        e = self.inner(z, t, encoder_hidden_states=encoder_hidden_states, **kw).sample.double()
        a = self.alphas[int(t)]
        x0 = (z.double() - math.sqrt(1 - a) * e) / math.sqrt(a)
        return SimpleNamespace(sample=(math.sqrt(a) * e - math.sqrt(1 - a) * x0).float())


@pytest.fixture(scope="module")
def eps_and_v():
    eps_pipe = tiny_pipeline(seed=5, family="sd2", prediction_type="epsilon")
    sched = DDIMScheduler(**{k: v for k, v in eps_pipe.scheduler_config.items()})
    v_pipe = dataclasses.replace(eps_pipe, unet=VFromEps(eps_pipe.unet, sched.alphas_cumprod),
                                 scheduler_config=dict(eps_pipe.scheduler_config, prediction_type="v_prediction"),
                                 _prompt_cache={}, _alphas=None)
    return eps_pipe, v_pipe


def test_v_prediction_is_converted_to_the_same_eps(eps_and_v) -> None:
    eps_pipe, v_pipe = eps_and_v
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    emb = eps_pipe.encode_prompts(["a red circle"] * 3)
    for t in (981, 501, 21, 1):
        torch.testing.assert_close(v_pipe.eps(z, t, emb), eps_pipe.eps(z, t, emb), rtol=0, atol=2e-5)
    raw = v_pipe.unet(z, 501, encoder_hidden_states=emb).sample
    assert float((raw - eps_pipe.eps(z, 501, emb)).abs().max()) > 0.1  # unconverted, v is not ε


def test_ddim_inversion_of_a_v_model_matches_the_eps_model(eps_and_v) -> None:
    eps_pipe, v_pipe = eps_and_v
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    emb = eps_pipe.encode_prompts(["a blue square", "a red star"])
    zt_e, zt_v = ddim_invert(eps_pipe, z0, emb, 10), ddim_invert(v_pipe, z0, emb, 10)
    torch.testing.assert_close(zt_v, zt_e, rtol=0, atol=1e-4)
    torch.testing.assert_close(ddim_sample(v_pipe, zt_v, emb, 10), ddim_sample(eps_pipe, zt_e, emb, 10), rtol=0, atol=1e-4)


def test_sampling_a_v_model_equals_diffusers_ddim_in_v_mode() -> None:
    """memtui's DDIM on the converted ε equals diffusers' DDIMScheduler stepping the raw v output
    with ``prediction_type="v_prediction"`` (an independent implementation of the conversion)."""
    pipe = tiny_pipeline(seed=7, family="sd2")
    emb = pipe.encode_prompts(["a green triangle"])
    zT = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ours = ddim_sample(pipe, zT, emb, 8)
    sched, _ = schedule(pipe, 8)
    ref = DDIMScheduler.from_config(sched.config, prediction_type="v_prediction")
    ref.set_timesteps(8)
    z = zT.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            v = pipe.unet(z, t, encoder_hidden_states=emb).sample
            z = ref.step(v, t, z).prev_sample
    torch.testing.assert_close(ours, z, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------- SDXL
def test_sdxl_packs_both_encoders_and_the_pooled_embedding() -> None:
    pipe = tiny_pipeline(seed=4, family="sdxl")
    emb = pipe.encode_prompts(["a red circle", ""])
    assert emb.shape == (2, 78, 64)
    ids = pipe.tokenizer(["a red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        o1 = pipe.text_encoder(ids, output_hidden_states=True)
        o2 = pipe.text_encoder_2(ids, output_hidden_states=True)
    torch.testing.assert_close(emb[0, :77], torch.cat([o1.hidden_states[-2][0], o2.hidden_states[-2][0]], -1))
    torch.testing.assert_close(emb[0, 77, :32], o2.text_embeds[0])
    assert float(emb[0, 77, 32:].abs().max()) == 0.0
    assert float(emb[1].abs().max()) == 0.0  # force_zeros_for_empty_prompt
    # eps = the UNet called with the pooled embedding and the time ids (H, W, 0, 0, H, W)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        direct = pipe.unet(z, 301, encoder_hidden_states=emb[:1, :77], added_cond_kwargs={
            "text_embeds": o2.text_embeds, "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]])}).sample
    torch.testing.assert_close(pipe.eps(z, 301, emb[:1]), direct, rtol=0, atol=1e-6)


def test_sdxl_vae_runs_in_float32_under_half_precision(family_dirs) -> None:
    pipe = load_base(family_dirs["sdxl"], precision="bf16")
    assert pipe.dtype == torch.bfloat16 and pipe.vae_dtype == torch.float32
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    assert pipe.encode_images(img).dtype == torch.float32
    assert torch.isfinite(pipe.decode_latents(pipe.encode_images(img))).all()


# ---------------------------------------------------------------------------- checkpoints
def _shapes(pipe) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in pipe.unet.state_dict().items()}


def test_checkpoint_families_from_keys() -> None:
    assert checkpoint_families(_shapes(tiny_pipeline(family="sd1"))) == {"sd1"}
    assert checkpoint_families(_shapes(tiny_pipeline(family="sd2"))) == {"sd2"}
    assert checkpoint_families(_shapes(tiny_pipeline(family="sdxl"))) == {"sdxl"}
    # partial ESD-x dicts (cross-attention only) at the released widths
    assert checkpoint_families({"down.attn2.to_k.weight": (320, 768)}) == {"sd1"}
    assert checkpoint_families({"down.attn2.to_k.weight": (320, 1024)}) == {"sd2"}
    assert checkpoint_families({"down.attn2.to_k.weight": (640, 2048)}) == {"sdxl"}
    # an unreleased width: some UNet family (not Flux), which one the shape check decides
    assert checkpoint_families({"down.attn2.to_k.weight": (32, 64)}) == {"sd1", "sd2", "sdxl"}
    assert checkpoint_families({"single_transformer_blocks.0.attn.to_q.weight": (8, 8)}) == {"flux"}
    assert checkpoint_families({"transformer_blocks.0.attn.to_k.weight": (8, 8)}) == {"flux"}  # ESD-x-like partial
    assert checkpoint_families(_shapes(tiny_pipeline(family="flux"))) == {"flux"}


@pytest.mark.parametrize("ckpt_family,base_family,names", [
    ("sdxl", "sd1", ("Stable Diffusion XL (sdxl)", "Stable Diffusion 1.x (sd1)")),
    ("sd2", "sd1", ("Stable Diffusion 2.x (sd2)", "Stable Diffusion 1.x (sd1)")),
    ("sd1", "sdxl", ("Stable Diffusion 1.x (sd1)", "Stable Diffusion XL (sdxl)")),
])
def test_a_checkpoint_of_another_family_is_refused_naming_both(ckpt_family, base_family, names, family_dirs, tmp_path) -> None:
    other = tiny_pipeline(seed=9, family=ckpt_family)
    f = save_state_dict(other.unet.state_dict(), tmp_path / "unet.safetensors")
    base = load_base(family_dirs[base_family])
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:
        load_ablated(base, f)
    msg = str(err.value)
    assert all(n in msg for n in names) and "Nothing was changed" in msg
    assert all(torch.equal(before[k], v) for k, v in base.unet.state_dict().items())


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_a_partial_unet_of_the_same_family_loads_and_reports(family, family_dirs, tmp_path) -> None:
    base = load_base(family_dirs[family])
    erased = tiny_pipeline(seed=11, family=family)
    sd = {k: v for k, v in erased.unet.state_dict().items() if "attn2" in k}
    report = load_ablated(base, save_state_dict(sd, tmp_path / "esd-x.safetensors"))
    assert report.kind == "unet_partial" and report.components == ["unet"]
    assert len(report.changed_tensors) == len(sd)
    for k, v in sd.items():
        assert torch.equal(base.unet.state_dict()[k], v)
