"""LoRA adapters (diffusers / PEFT format) on every family through diffusers' ``load_lora_weights``:
detected and described without a base, fused weights equal to ``W + scale·B·A`` computed here from
the file, unfused PEFT layers giving the same predictions, the scale honoured, and an adapter of
another family (or of layers the base lacks) refused before anything changes. ``memtui --batch``
applies one with ``--lora-scale`` / ``--no-lora-fuse``."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from memtui.cli import main
from memtui.engine.model.loading import CheckpointMismatchError, inspect_checkpoint, load_ablated
from memtui.engine.testkit import save_lora, tiny_pipeline
from tests.helpers import make_captions_set

pytestmark = pytest.mark.usefixtures("_one_thread")
FAMILIES = ("sd1", "sd2", "sdxl", "flux")


def _eps(pipe) -> torch.Tensor:
    z = torch.randn(2, *pipe.latent_shape(), generator=torch.Generator().manual_seed(0))
    pipe.clear_prompt_cache()
    return pipe.eps(z, 401, pipe.encode_prompts(["a photo of a dog", "a red circle"]))


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_lora_is_w_plus_scale_ba(family, tmp_path) -> None:
    pipe = tiny_pipeline(seed=3, family=family)
    f = save_lora(pipe, tmp_path / "lora.safetensors", text_encoder=True)
    info = inspect_checkpoint(f)
    denoiser = "transformer" if family == "flux" else "unet"
    assert info["kind"] == "lora" and info["components"] == sorted(["text_encoder", denoiser])
    assert (info["family"] == "flux") == (family == "flux")
    factors = load_file(str(f))
    before = {c: {k: v.clone() for k, v in m.state_dict().items()} for c, m in pipe.component_modules().items()}
    report = load_ablated(pipe, f, lora_scale=0.7)
    assert report.kind == "lora" and sorted(report.components) == sorted(["text_encoder", denoiser])
    assert report.n_loaded == len(factors) and len(report.changed_tensors) == len(factors) // 2
    mods = pipe.component_modules()
    for key in [k for k in factors if k.endswith("lora_A.weight")]:
        comp, name = key.split(".", 1)
        comp = denoiser if comp in ("unet", "transformer") else comp
        w = name.replace(".lora_A.weight", ".weight")
        want = before[comp][w] + 0.7 * factors[key.replace("lora_A", "lora_B")] @ factors[key]
        torch.testing.assert_close(mods[comp].state_dict()[w], want, rtol=0, atol=1e-6)
    assert not any("lora" in n for m in mods.values() for n, _ in m.named_modules())  # fused: plain modules again


@pytest.mark.parametrize("family", ["sd1", "flux"])
def test_unfused_lora_predicts_as_the_fused_one_and_keeps_the_weights(family, tmp_path) -> None:
    fused, unfused, plain = (tiny_pipeline(seed=3, family=family) for _ in range(3))
    f = save_lora(fused, tmp_path / "lora.safetensors", text_encoder=True)
    w_before = {k: v.clone() for k, v in unfused.unet.state_dict().items()}
    load_ablated(fused, f, lora_scale=0.5)
    report = load_ablated(unfused, f, lora_scale=0.5, lora_fuse=False)
    assert any("unfused" in w for w in report.warnings)
    torch.testing.assert_close(_eps(unfused), _eps(fused), rtol=0, atol=2e-5)
    assert (_eps(unfused) - _eps(plain)).abs().max() > 1e-3
    base_layers = {k.replace(".base_layer", ""): v for k, v in unfused.unet.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base_layers[k], v) for k, v in w_before.items())


def test_scale_zero_changes_nothing(tmp_path) -> None:
    pipe, ref = tiny_pipeline(seed=3), tiny_pipeline(seed=3)
    report = load_ablated(pipe, save_lora(pipe, tmp_path / "lora.safetensors"), lora_scale=0.0)
    assert report.changed_tensors == [] and report.changed_components == []
    torch.testing.assert_close(_eps(pipe), _eps(ref), rtol=0, atol=0)


@pytest.mark.parametrize("lora_family,base_family,names", [
    ("flux", "sd1", ("Flux.1 (flux)", "Stable Diffusion 1.x (sd1)")),
    ("sd1", "flux", ("Stable Diffusion 1.x", "Flux.1 (flux)")),
])
def test_a_lora_of_another_family_is_refused(lora_family, base_family, names, tmp_path) -> None:
    f = save_lora(tiny_pipeline(seed=3, family=lora_family), tmp_path / "lora.safetensors")
    pipe = tiny_pipeline(seed=3, family=base_family)
    before = _eps(pipe)
    with pytest.raises(CheckpointMismatchError) as err:
        load_ablated(pipe, f)
    assert all(n in str(err.value) for n in names) and "Nothing was changed" in str(err.value)
    torch.testing.assert_close(_eps(pipe), before, rtol=0, atol=0)
    assert not any("lora" in n for n, _ in pipe.unet.named_modules())


def test_a_lora_of_layers_the_base_lacks_is_refused(tmp_path) -> None:
    from safetensors.torch import save_file

    f = tmp_path / "odd.safetensors"
    save_file({"unet.down_blocks.7.attentions.0.to_q.lora_A.weight": torch.ones(2, 32),
               "unet.down_blocks.7.attentions.0.to_q.lora_B.weight": torch.ones(32, 2)}, str(f))
    pipe = tiny_pipeline(seed=3)
    with pytest.raises(CheckpointMismatchError, match="not in the base"):
        load_ablated(pipe, f)


def test_batch_run_applies_a_lora_with_its_scale(tmp_path, capsys) -> None:
    from memtui.engine.testkit import save_pipeline

    base = save_pipeline(tiny_pipeline(seed=3, family="flux"), tmp_path / "flux")
    lora = save_lora(tiny_pipeline(seed=3, family="flux"), tmp_path / "eraseanything.safetensors")
    erased, ref = make_captions_set(tmp_path / "erased", 2, 0), make_captions_set(tmp_path / "reference", 2, 1)
    out = tmp_path / "run"
    assert main(["--batch", "--base", str(base), "--ablated", str(lora), "--lora-scale", "0.5", "--no-lora-fuse",
                 "--erased", str(erased), "--reference", str(ref), "--method", "ddim", "--steps", "3",
                 "--device", "cpu", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "finished"
    spec = json.loads((out / "spec.json").read_text())
    assert spec["lora_scale"] == 0.5 and spec["lora_fuse"] is False
    loaded = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines() if '"loaded"' in x][0]
    assert loaded["family"] == "flux" and loaded["load_report"]["kind"] == "lora"
    assert any("scale 0.5" in w for w in loaded["load_report"]["warnings"])


@pytest.mark.parametrize("family", ["sd1", "flux"])
def test_a_lora_written_by_diffusers_save_lora_weights(family, tmp_path) -> None:
    """The file diffusers itself writes (PEFT-trained adapter -> save_lora_weights) loads, and the
    patched model predicts as the PEFT-adapted one did (lora_alpha 4 over rank 2: scaling 2)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from memtui.engine.model.loading.lora import diffusers_pipeline

    trained = tiny_pipeline(seed=3, family=family)
    torch.manual_seed(0)
    trained.unet.add_adapter(LoraConfig(r=2, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"],
                                        init_lora_weights=False))
    want = _eps(trained)
    denoiser = "transformer" if family == "flux" else "unet"
    type(diffusers_pipeline(trained)).save_lora_weights(  # as diffusers' training scripts save it
        tmp_path, **{f"{denoiser}_lora_layers": get_peft_model_state_dict(trained.unet),
                     f"{denoiser}_lora_adapter_metadata": trained.unet.peft_config["default"].to_dict()})
    f = tmp_path / "pytorch_lora_weights.safetensors"
    assert inspect_checkpoint(f)["kind"] == "lora"
    base = tiny_pipeline(seed=3, family=family)
    assert (_eps(base) - want).abs().max() > 1e-3
    load_ablated(base, f)
    torch.testing.assert_close(_eps(base), want, rtol=0, atol=2e-5)
