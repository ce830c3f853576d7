"""Loader checks beyond the per-kind round trips: text-encoder-only checkpoints, shape mismatches,
adapters, malicious pickles, PEFT/DataParallel key forms, cheap inspection and precision."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from memtui.engine import testkit as tk
from memtui.engine.model.loading import (CheckpointKind, CheckpointMismatchError, UnsafeCheckpointError,
                                   UnsupportedCheckpointError, detect_kind, inspect_checkpoint,
                                   load_ablated, load_base, load_file)

pytestmark = pytest.mark.usefixtures("_one_thread")  # single-threaded torch: see tests/conftest.py

PROMPTS = ["a photo of a red circle", "van gogh painting of a church"]


def states(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].to(a[k].dtype)) for k in a)


@pytest.fixture
def fresh(tiny_pipe_dir):
    return load_base(tiny_pipe_dir)


@pytest.fixture(scope="module")
def te_modified(tiny_pipe):
    return tk.perturbed(tiny_pipe, r"self_attn\.(k|v)_proj\.weight$", component="text_encoder", scale=0.2)


@pytest.fixture(scope="module")
def wide_pipe():
    """A tiny pipeline whose cross-attention / text width is 48 instead of 32."""
    return tk.tiny_pipeline(seed=0, cross_dim=48)


# ----------------------------------------------------------------------------- text encoder only
@pytest.mark.parametrize("form", ["te.pt", "te.safetensors", "te_bare.bin", "folder"])
def test_text_encoder_only_changes_only_the_text_encoder(form, fresh, tiny_pipe, te_modified, tmp_path):
    mod, changed = te_modified
    prefix = "" if form.startswith("te_bare") else "text_model."
    path = tk.save_text_encoder(mod.text_encoder, tmp_path / form, prefix=prefix)
    assert detect_kind(path) is (CheckpointKind.TEXT_ENCODER_FOLDER if form == "folder" else CheckpointKind.TEXT_ENCODER)
    before = fresh.encode_prompts(PROMPTS).clone()  # fills the prompt cache
    unet0, vae0 = states(fresh.unet), states(fresh.vae)
    report = load_ablated(fresh, path)
    assert report.components == ["text_encoder"] and report.changed_components == ["text_encoder"]
    assert sorted(report.changed_tensors) == changed and len(changed) == 4  # k,v of 2 layers
    assert report.missing_keys == [] and report.n_loaded == 36
    assert same(states(fresh.unet), unet0) and same(states(fresh.vae), vae0)
    assert same(states(fresh.text_encoder), states(mod.text_encoder))
    after = fresh.encode_prompts(PROMPTS)  # cache cleared by the load: recomputed
    assert (after - before).abs().max() > 1e-3
    assert torch.allclose(after, mod.encode_prompts(PROMPTS), atol=0, rtol=0)


# ----------------------------------------------------------------------------- mismatches
def test_sd2_like_unet_on_sd1_base_is_refused_and_base_untouched(fresh, tiny_pipe, wide_pipe, tmp_path):
    path = tk.save_unet_state_dict(wide_pipe.unet, tmp_path / "wide.safetensors")
    assert detect_kind(path) is CheckpointKind.UNET_FULL
    before = states(fresh.unet)
    with pytest.raises(CheckpointMismatchError) as err:
        load_ablated(fresh, path)
    msg = str(err.value)
    assert "cross-attention dim 48 does not fit the base's 32" in msg
    assert "attn2.to_k.weight: checkpoint [64, 48] vs base [64, 32]" in msg \
        or "attn2.to_k.weight: checkpoint [32, 48] vs base [32, 32]" in msg
    assert same(states(fresh.unet), before)


def test_wrong_width_text_encoder_is_refused(fresh, wide_pipe, tmp_path):
    path = tk.save_text_encoder(wide_pipe.text_encoder, tmp_path / "te.pt")
    before = states(fresh.text_encoder)
    with pytest.raises(CheckpointMismatchError, match="text hidden size 48 does not fit the base's 32"):
        load_ablated(fresh, path)
    assert same(states(fresh.text_encoder), before)


def test_checkpoint_of_unknown_keys_is_refused(fresh, tmp_path):
    path = tk.save_state_dict({"down_blocks.9.foo.weight": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointMismatchError, match="none of the checkpoint's 1 unet tensors"):
        load_ablated(fresh, path)
    path = tk.save_state_dict({"layer.weight": torch.zeros(3)}, tmp_path / "y.pt")
    with pytest.raises(UnsupportedCheckpointError, match="could not tell"):
        detect_kind(path)


# ----------------------------------------------------------------------------- adapters
def test_adapters_are_detected_and_refused_clearly(fresh, tiny_pipe, tmp_path):
    spm = tk.save_spm_adapter(tiny_pipe.unet, tmp_path / "spm.safetensors")
    assert detect_kind(spm) is CheckpointKind.SPM
    with pytest.raises(UnsupportedCheckpointError, match="SPM adapters are not supported yet"):
        load_ablated(fresh, spm)
    rec = tk.save_receler_eraser(tiny_pipe.unet, tmp_path / "receler")
    assert detect_kind(rec) is CheckpointKind.RECELER
    assert detect_kind(rec / "eraser_weights.pt") is CheckpointKind.RECELER
    with pytest.raises(UnsupportedCheckpointError, match="Receler erasers are not supported yet"):
        load_ablated(fresh, rec / "eraser_weights.pt")
    assert inspect_checkpoint(spm)["kind"] == "spm"


# ----------------------------------------------------------------------------- malicious pickle
class _Payload:
    """Unpickling this writes a marker file (a stand-in for arbitrary code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_malicious_pickle_is_refused_and_never_runs(fresh, tmp_path):
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Payload(control)))  # positive control: the payload really runs
    assert control.exists()
    marker = tmp_path / "marker"
    paths = [tmp_path / "evil.pt", tmp_path / "evil.ckpt", tmp_path / "legacy.bin"]
    torch.save({"unet": {"conv_in.weight": torch.zeros(1)}, "x": _Payload(marker)}, paths[0])
    torch.save({"state_dict": {"model.diffusion_model.out.2.bias": torch.zeros(1)}, "cb": _Payload(marker)}, paths[1])
    torch.save(_Payload(marker), paths[2], _use_new_zipfile_serialization=False)
    for path in paths:
        for call in (lambda: load_ablated(fresh, path), lambda: detect_kind(path),
                     lambda: inspect_checkpoint(path), lambda: load_file(path)):
            with pytest.raises(UnsafeCheckpointError, match="needs code.*safetensors"):
                call()
    assert not marker.exists()


# ----------------------------------------------------------------------------- key forms
def test_wrapped_and_peft_keys(fresh, tiny_pipe, tmp_path):
    mod, changed = tk.perturbed(tiny_pipe, r"attn2\.to_k\.weight$")
    sd = mod.unet.state_dict()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
    path = tk.save_state_dict(wrapped, tmp_path / "wrapped.pt")
    report = load_ablated(fresh, path)
    assert report.kind == "unet_full" and sorted(report.changed_tensors) == changed
    assert same(states(fresh.unet), sd)

    peft = {k.replace(".to_k.", ".to_k.base_layer."): v for k, v in sd.items() if ".attn2." in k}
    path = tk.save_state_dict(peft, tmp_path / "peft_merged.safetensors")
    fresh2 = load_base(fresh.source)
    report = load_ablated(fresh2, path)
    assert report.kind == "unet_partial" and sorted(report.changed_tensors) == changed
    assert any("base_layer" in w for w in report.warnings)

    peft["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.default.weight"] = torch.zeros(2, 32)
    path = tk.save_state_dict(peft, tmp_path / "peft_lora.safetensors")
    with pytest.raises(UnsupportedCheckpointError, match="unmerged PEFT LoRA"):
        load_ablated(fresh2, path)


def test_full_vs_partial_without_a_base(tiny_pipe, tmp_path):
    sd = tiny_pipe.unet.state_dict()
    esd_u = tk.save_unet_state_dict(tiny_pipe.unet, tmp_path / "esd_u.pt", keys=[k for k in sd if ".attn2." not in k])
    esd_x = tk.save_unet_state_dict(tiny_pipe.unet, tmp_path / "esd_x.pt", keys=[k for k in sd if ".attn2." in k])
    full = tk.save_unet_state_dict(tiny_pipe.unet, tmp_path / "full.pt")
    assert detect_kind(esd_u) is CheckpointKind.UNET_PARTIAL  # every family present, attn2 lacking
    assert detect_kind(esd_x) is CheckpointKind.UNET_PARTIAL
    assert detect_kind(full) is CheckpointKind.UNET_FULL
    assert detect_kind(esd_u, base=tiny_pipe.unet) is CheckpointKind.UNET_PARTIAL
    assert detect_kind(full, base=tiny_pipe.unet) is CheckpointKind.UNET_FULL


# ----------------------------------------------------------------------------- inspect, precision
def test_inspect_checkpoint_is_cheap_and_accurate(tiny_pipe, tiny_pipe_dir, tmp_path):
    path = tk.save_unet_state_dict(tiny_pipe.unet, tmp_path / "u.safetensors")
    info = inspect_checkpoint(path)
    assert info == {**info, "kind": "unet_full", "n_tensors": 208, "components": ["unet"],
                    "size_bytes": path.stat().st_size, "dtypes": {"F32": 208}}
    json.dumps(info)
    n_vae = len(tiny_pipe.vae.state_dict())
    info = inspect_checkpoint(tiny_pipe_dir)
    assert info["kind"] == "pipeline" and info["components"] == ["text_encoder", "unet", "vae"]
    assert info["n_tensors"] == 208 + 36 + n_vae
    ckpt = tk.save_compvis_checkpoint(tiny_pipe, tmp_path / "m.ckpt")
    info = inspect_checkpoint(ckpt)
    assert info["kind"] == "compvis" and info["components"] == ["unet", "text_encoder"]
    assert info["n_tensors"] == 208 + 36


def test_fp16_pipeline_takes_fp32_checkpoint_in_its_precision(tiny_pipe, tiny_pipe_dir, tmp_path):
    mod, changed = tk.perturbed(tiny_pipe, r"attn2\.to_v\.weight$", scale=0.1)
    pipe = load_base(tiny_pipe_dir, precision="fp16")
    report = load_ablated(pipe, tk.save_unet_state_dict(mod.unet, tmp_path / "u.pt"))
    assert pipe.unet.dtype == torch.float16
    assert same(states(pipe.unet), {k: v.half() for k, v in mod.unet.state_dict().items()})
    assert sorted(report.changed_tensors) == changed and report.checkpoint_dtypes == {"float32": 208}
    half = tk.save_state_dict({k: v.half() for k, v in mod.unet.state_dict().items()}, tmp_path / "h.safetensors")
    fp32 = load_base(tiny_pipe_dir)
    report = load_ablated(fp32, half)
    assert any("cast up to float32" in w for w in report.warnings)
    assert same(states(fp32.unet), {k: v.half().float() for k, v in mod.unet.state_dict().items()})
