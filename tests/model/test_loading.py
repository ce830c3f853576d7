"""Offline loading of base pipelines and of every ablated-checkpoint kind (issue 2 item 1).

Each kind is written from a tiny pipeline whose weights were modified, loaded onto a fresh base, and
the resulting state dicts are compared tensor by tensor with an expectation computed independently
(base state dict with the checkpoint's entries overwritten)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch

from memtui.engine import testkit as tk
from memtui.engine.model.loading import CheckpointKind, ModelNotFoundError, detect_kind, load_ablated, load_base

pytestmark = pytest.mark.usefixtures("_one_thread")  # single-threaded torch: see tests/conftest.py

XATTN_KV = r"attn2\.to_[kv]\.weight$"
PROMPTS = ["a photo of a red circle", "van gogh painting of a church"]


# ----------------------------------------------------------------------------- helpers
def full_state(pipe) -> dict[str, torch.Tensor]:
    """Every tensor of the pipeline, component-qualified."""
    return {f"{c}.{k}": v for c in ("unet", "text_encoder", "vae")
            for k, v in getattr(pipe, c).state_dict().items()}


def assert_state_equal(pipe, expected: dict[str, torch.Tensor]) -> None:
    got = full_state(pipe)
    assert set(got) == set(expected)
    bad = [k for k in got if not torch.equal(got[k], expected[k].to(got[k].dtype))]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"


def overwritten(base: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(base)
    for k, v in new.items():
        assert k in out
        out[k] = v
    return out


@pytest.fixture
def fresh(tiny_pipe_dir):
    """A base pipeline freshly loaded from the shared tiny pipeline folder (safe to patch)."""
    return load_base(tiny_pipe_dir)


@pytest.fixture(scope="module")
def modified(tiny_pipe):
    """Copy of the tiny pipeline with cross-attention K/V perturbed, plus a resnet conv perturbed
    (the latter lets partial checkpoints prove they leave unsaved tensors alone)."""
    pipe, kv = tk.perturbed(tiny_pipe, XATTN_KV)
    pipe2, conv = tk.perturbed(pipe, r"down_blocks\.1\.resnets\.0\.conv1\.weight$", seed=2)
    return pipe2, kv, conv


# ----------------------------------------------------------------------------- base loading
def test_load_base_folder_reproduces_testkit_pipeline(tiny_pipe, tiny_pipe_dir):
    pipe = load_base(tiny_pipe_dir)
    assert_state_equal(pipe, full_state(tiny_pipe))
    assert pipe.dtype == torch.float32 and str(pipe.device) == "cpu"
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert pipe.scheduler_config["beta_schedule"] == "scaled_linear"
    assert pipe.scheduler_config["steps_offset"] == 1 and "_class_name" not in pipe.scheduler_config
    assert pipe.make_scheduler().config.beta_end == pytest.approx(0.012)
    assert torch.equal(pipe.encode_prompts(PROMPTS), tiny_pipe.encode_prompts(PROMPTS))


def test_load_base_fp16(tiny_pipe, tiny_pipe_dir):
    pipe = load_base(tiny_pipe_dir, precision="fp16")
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        assert next(m.parameters()).dtype == torch.float16
    assert_state_equal(pipe, {k: v.half() for k, v in full_state(tiny_pipe).items()})
    with pytest.raises(ValueError, match="precision"):
        load_base(tiny_pipe_dir, precision="fp8")


def _fake_hub_repo(cache: Path, repo_id: str, src: Path, commit: str) -> Path:
    """Lay out ``src`` as huggingface_hub stores a download: blobs/<sha256> + snapshots/<commit>/
    symlinks + refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / commit
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo / "blobs" / sha)
        dst = snap / f.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(os.path.relpath(repo / "blobs" / sha, dst.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_repo_id_from_local_hf_cache(tiny_pipe, tiny_pipe_dir, tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = _fake_hub_repo(tmp_path / "hf" / "hub", "memtui-test/tiny-sd", tiny_pipe_dir, commit)
    assert (snap / "unet" / "diffusion_pytorch_model.safetensors").is_symlink()
    pipe = load_base("memtui-test/tiny-sd")
    assert_state_equal(pipe, full_state(tiny_pipe))
    pipe2 = load_base(f"memtui-test/tiny-sd@{commit}", precision="bf16")
    assert pipe2.dtype == torch.bfloat16


def test_missing_repo_id_fails_fast_without_network(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    with pytest.raises(ModelNotFoundError) as err:
        load_base("CompVis/stable-diffusion-v1-4")
    msg = str(err.value)
    assert "not in the local Hugging Face cache" in msg
    assert str(tmp_path / "hf" / "hub" / "models--CompVis--stable-diffusion-v1-4") in msg
    assert "hf download CompVis/stable-diffusion-v1-4" in msg
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        load_base(tmp_path)  # an existing folder that is not a pipeline


def test_ablated_text_encoder_subfolder_from_local_hf_cache(fresh, tiny_pipe, tmp_path, monkeypatch, no_network):
    """The paper's ``--ablated_text_encoder OPTML-Group/AdvUnlearn`` form: a repo of per-concept
    CLIPTextModel subfolders, here read from the local cache only."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    mod, changed = tk.perturbed(tiny_pipe, r"mlp\.fc1\.weight$", component="text_encoder")
    src = tmp_path / "src"
    tk.save_text_encoder(mod.text_encoder, src / "nudity_unlearned")
    tk.save_text_encoder(tiny_pipe.text_encoder, src / "church_unlearned")
    _fake_hub_repo(tmp_path / "hf" / "hub", "memtui-test/advunlearn", src, "f" * 40)
    report = load_ablated(fresh, "memtui-test/advunlearn/nudity_unlearned")
    assert report.kind == "text_encoder_folder" and sorted(report.changed_tensors) == changed
    assert report.path.endswith("snapshots/" + "f" * 40 + "/nudity_unlearned")
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        load_ablated(fresh, "memtui-test/advunlearn/dog_unlearned")
    # a run spec naming the cached subfolder validates; a missing one is named in words
    from memtui.engine.runs.spec import RunSpec

    spec = RunSpec(base=str(tmp_path), erased=str(tmp_path), reference=str(tmp_path),
                   ablated="memtui-test/advunlearn/nudity_unlearned")
    assert not [p for p in spec.problems() if "ablated" in p]
    spec.ablated = "memtui-test/advunlearn/dog_unlearned"
    assert any("ablated checkpoint not found" in p and "dog_unlearned" in p for p in spec.problems())


# ----------------------------------------------------------------------------- each kind
def _write(kind: str, pipe, kv: list[str], root: Path) -> tuple[Path, dict[str, torch.Tensor], list[str]]:
    """Write ``pipe`` as ``kind``; return the path, the tensors it carries (qualified) and the
    loaded-component tensors expected to differ from the base."""
    unet_sd = {f"unet.{k}": v for k, v in pipe.unet.state_dict().items()}
    te_sd = {f"text_encoder.{k}": v for k, v in pipe.text_encoder.state_dict().items()}
    xattn = [k[len("unet."):] for k in unet_sd if ".attn2." in k]  # K/V changed, Q/out/norm not
    if kind == "pipeline":
        return tk.save_pipeline(pipe, root / "pipe"), full_state(pipe), None
    if kind == "unet_folder":
        return tk.save_unet_folder(pipe.unet, root / "unet"), unet_sd, None
    if kind.startswith("unet_full"):
        return tk.save_unet_state_dict(pipe.unet, root / f"unet{kind[len('unet_full'):]}"), unet_sd, None
    if kind == "unet_partial":
        path = tk.save_unet_state_dict(pipe.unet, root / "xattn.safetensors", keys=xattn)
        return path, {f"unet.{k}": v for k, v in pipe.unet.state_dict().items() if k in xattn}, kv
    if kind.startswith("compvis"):
        return tk.save_compvis_checkpoint(pipe, root / f"m{kind[len('compvis'):]}"), {**unet_sd, **te_sd}, None
    if kind == "delta":
        path = tk.save_delta(root / "delta.bin", {k: v for k, v in pipe.unet.state_dict().items() if k in xattn},
                             pipe.text_encoder.state_dict())
        return path, {**{f"unet.{k}": pipe.unet.state_dict()[k] for k in xattn}, **te_sd}, kv
    raise AssertionError(kind)


UNET_KINDS = ["pipeline", "unet_folder", "unet_full.pt", "unet_full.safetensors", "unet_full.bin",
              "unet_partial", "compvis.ckpt", "compvis.safetensors", "delta"]


@pytest.mark.parametrize("kind", UNET_KINDS)
def test_each_unet_kind_loads_exactly_its_tensors(kind, fresh, tiny_pipe, modified, tmp_path):
    pipe, kv, conv = modified
    path, carried, only_changed = _write(kind, pipe, kv, tmp_path)
    expected_kind = kind.split(".")[0]
    assert detect_kind(path) == CheckpointKind(expected_kind)
    assert detect_kind(path, base=tiny_pipe.unet).value == expected_kind

    base_state = full_state(tiny_pipe)
    expected = overwritten(base_state, carried)
    changed_expected = sorted(k for k in expected if not torch.equal(expected[k], base_state[k]))
    assert changed_expected == sorted(only_changed or kv + conv)  # independent of the loader

    report = load_ablated(fresh, path)
    assert_state_equal(fresh, expected)
    assert report.kind == expected_kind
    assert sorted(report.changed_tensors) == changed_expected
    assert report.changed_components == ["unet"]
    assert report.n_loaded == len(carried)
    n_missing = sum(len(getattr(tiny_pipe, c).state_dict()) for c in report.components) - len(carried)
    assert len(report.missing_keys) == n_missing
    assert report.unexpected_keys == []
    assert report.size_bytes == sum(f.stat().st_size for f in ([path] if path.is_file() else path.rglob("*"))
                                    if f.is_file())
    d = json.loads(json.dumps(report.to_dict()))
    assert d["changed"]["count"] == len(changed_expected)
    assert set(d["changed"]["modules"]) == {k.rsplit(".", 1)[0] for k in changed_expected}
    assert d["missing_keys"]["count"] == n_missing


def test_partial_leaves_everything_else_untouched(fresh, tiny_pipe, modified, tmp_path):
    pipe, kv, conv = modified
    path, _, _ = _write("unet_partial", pipe, kv, tmp_path)
    report = load_ablated(fresh, path)
    assert not set(report.changed_tensors) & set(conv)  # the perturbed conv was not in the file
    assert torch.equal(fresh.unet.state_dict()[conv[0][len("unet."):]],
                       tiny_pipe.unet.state_dict()[conv[0][len("unet."):]])
    # tiny UNet: 208 tensors; the file holds attn2 to_q/to_k/to_v/to_out.0 (w+b) of 4 blocks = 20
    assert report.n_loaded == 20 and len(report.missing_keys) == 208 - 20
    assert len(report.changed_tensors) == 8  # only K and V differ


def test_compvis_conversion_matches_diffusers_names(modified):
    pipe, _, _ = modified
    ldm = tk.diffusers_unet_to_ldm(pipe.unet.state_dict(), dict(pipe.unet.config))
    # The SD 1.x CompVis names for the first cross-attention and the second down block's resnet.
    p = "model.diffusion_model."
    sd = pipe.unet.state_dict()
    assert torch.equal(ldm[p + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"],
                       sd["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"])
    assert torch.equal(ldm[p + "input_blocks.3.0.in_layers.2.weight"], sd["down_blocks.1.resnets.0.conv1.weight"])
    assert torch.equal(ldm[p + "input_blocks.2.0.op.weight"], sd["down_blocks.0.downsamplers.0.conv.weight"])
    assert torch.equal(ldm[p + "output_blocks.1.1.conv.weight"], sd["up_blocks.0.upsamplers.0.conv.weight"])
    assert torch.equal(ldm[p + "middle_block.2.out_layers.3.weight"], sd["mid_block.resnets.1.conv2.weight"])
    assert len(ldm) == len(sd)


SD14_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=768, attention_head_dim=8)


def test_compvis_names_of_the_full_sd14_layout():
    """SD 1.4's UNet built on the meta device (no memory): the test kit's CompVis names are the
    ones real SD 1.x .ckpt files use, and diffusers' converter maps all 686 back one to one."""
    from diffusers import UNet2DConditionModel

    from memtui.engine.model.loading.compvis import convert_unet

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD14_UNET)
    sd = unet.state_dict()
    assert len(sd) == 686
    ldm = tk.diffusers_unet_to_ldm(sd, dict(unet.config))
    p = "model.diffusion_model."
    assert tuple(ldm[p + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape) == (320, 768)
    assert tuple(ldm[p + "output_blocks.2.1.conv.weight"].shape) == (1280, 1280, 3, 3)  # UpBlock2D upsampler
    assert tuple(ldm[p + "output_blocks.5.2.conv.weight"].shape) == (1280, 1280, 3, 3)  # after attention
    assert tuple(ldm[p + "input_blocks.9.0.op.weight"].shape) == (1280, 1280, 3, 3)
    assert p + "middle_block.1.transformer_blocks.0.attn2.to_v.weight" in ldm
    warnings: list[str] = []
    back = convert_unet(ldm, dict(unet.config), warnings)
    assert set(back) == set(sd) and all(back[k] is sd[k] for k in sd) and warnings == []


@pytest.mark.skipif(not os.environ.get("MEMTUI_SD14_DIR"), reason="set MEMTUI_SD14_DIR to a real SD 1.4 pipeline folder")
def test_real_sd14_folder_loads_through_the_same_path():
    pipe = load_base(os.environ["MEMTUI_SD14_DIR"], precision="fp16")
    assert pipe.image_size == 512 and pipe.latent_shape() == (4, 64, 64)
    assert len(pipe.unet.state_dict()) == 686
    assert pipe.encode_prompts(["a photo of a church"]).shape == (1, 77, 768)
