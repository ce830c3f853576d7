"""Fixtures for the real-evaluation tests: tiny fake models in each detector's on-disk format."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

NUDENET_LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
    "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
    "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)


def nudenet_weights(size: int) -> tuple[np.ndarray, np.ndarray]:
    """W [3, (4+18)*3], B [(4+18)*3] of the fake NudeNet: output[0, r, n] = mean_rgb @ W[:, r*3+n] + B.

    anchor 0: box (16, 16, 10, 10), FEMALE_BREAST_EXPOSED score = mean red
    anchor 1: box (17, 16, 10, 10) (IoU 0.82 with anchor 0), BELLY_EXPOSED score = 0.9 * mean red
    anchor 2: box (3, 3, 4, 4), FACE_FEMALE score = mean blue
    """
    C, N = len(NUDENET_LABELS), 3
    W = np.zeros((3, 4 + C, N), np.float32)
    B = np.zeros((4 + C, N), np.float32)
    B[:4, 0] = (16, 16, 10, 10)
    B[:4, 1] = (17, 16, 10, 10)
    B[:4, 2] = (3, 3, 4, 4)
    W[0, 4 + NUDENET_LABELS.index("FEMALE_BREAST_EXPOSED"), 0] = 1.0
    W[0, 4 + NUDENET_LABELS.index("BELLY_EXPOSED"), 1] = 0.9
    W[2, 4 + NUDENET_LABELS.index("FACE_FEMALE"), 2] = 1.0
    return W.reshape(3, -1), B.reshape(-1)


@pytest.fixture(scope="session")
def nudenet_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ONNX graph with NudeNet's I/O layout: images [1, 3, 32, 32] -> output0 [1, 22, 3]."""
    onnx = pytest.importorskip("onnx", reason="onnx not installed (pip install 'memtui[dev]')")
    from onnx import TensorProto, helper, numpy_helper

    size = 32
    W, B = nudenet_weights(size)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["m", "W"], ["mw"]),
        helper.make_node("Add", ["mw", "B"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "fake_nudenet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + len(NUDENET_LABELS), 3])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B"),
                     numpy_helper.from_array(np.array([1, 4 + len(NUDENET_LABELS), 3], np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    names = "{" + ", ".join(f"{i}: '{n}'" for i, n in enumerate(NUDENET_LABELS)) + "}"
    helper.set_model_props(model, {"names": names})
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("nudenet") / "320n.onnx"
    onnx.save(model, str(path))
    return path


def _classifier_folder(path: Path, labels: dict[int, str], bias: np.ndarray | None, seed: int = 0) -> Path:
    import torch
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    cfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                       layer_type="basic", num_labels=len(labels), id2label=labels,
                       label2id={v: k for k, v in labels.items()})
    model = ResNetForImageClassification(cfg).eval()
    if bias is not None:
        lin = model.classifier[-1]
        with torch.no_grad():
            lin.weight.zero_()
            lin.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    model.save_pretrained(path)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def imagenet_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny 1000-class ResNet folders: 'random' (random head) and 'church' (zero weights, bias
    5 at class 497 and 0 elsewhere, so softmax at 497 = e^5 / (e^5 + 999) for every image)."""
    root = tmp_path_factory.mktemp("imagenet")
    labels = {i: f"class_{i}" for i in range(1000)}
    bias = np.zeros(1000, np.float32)
    bias[497] = 5.0
    return {"random": _classifier_folder(root / "random", labels, None, seed=1),
            "church": _classifier_folder(root / "church", labels, bias)}


STYLE_LABELS = {0: "claude-monet", 1: "vincent-van-gogh", 2: "pablo-picasso", 3: "rembrandt"}
STYLE_BIAS = np.array([3.0, 2.0, 1.0, 0.0], np.float32)


@pytest.fixture(scope="session")
def style_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 4-style classifier whose logits are the constant bias [3, 2, 1, 0] (van Gogh ranks 2nd)."""
    return _classifier_folder(tmp_path_factory.mktemp("style") / "ckpt", STYLE_LABELS, STYLE_BIAS)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP folder (model + image processor + word tokenizer)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from memtui.engine.testkit import TINY_WORDS
    from memtui.engine.model.tokenizer import build_word_tokenizer

    tok = build_word_tokenizer(TINY_WORDS)
    vocab = tok.get_vocab()
    eos = vocab["<|endoftext|>"]
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("clip") / "clip"
    CLIPModel(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


# ------------------------------------------------------------------ generation runs
GEN_STEPS = 4
PROMPTS_CSV = (
    "case_number,prompt,evaluation_seed,evaluation_guidance\n"
    "0,red circle,1,7.5\n"
    "1,red circle,2,7.5\n"
    "2,red circle,1,7.5\n"
    "3,red circle,1,1.0\n"
    "4,a photo of church,5,\n"
)


def generate_spec(base: Path, prompts: Path, **options):
    from memtui.engine.runs.spec import RunSpec

    return RunSpec(analysis="generate", base=str(base), batch_size=2, device="cpu",
                   options={"prompts": str(prompts), "steps": GEN_STEPS, **options})


@pytest.fixture(scope="session")
def prompts_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("prompts") / "church.csv"
    p.write_text(PROMPTS_CSV)
    return p


@pytest.fixture(scope="session")
def generated_set(tiny_pipe_dir: Path, prompts_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generate run of PROMPTS_CSV (5 rows, 4 LMS steps) on the tiny pipeline, uninterrupted."""
    from memtui.engine.compute.run import run_spec as run

    out = tmp_path_factory.mktemp("gen") / "church"
    run(generate_spec(tiny_pipe_dir, prompts_csv), out)
    return out
