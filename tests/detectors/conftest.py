"""Fixtures of the detector tests: tiny fake models in each detector's on-disk format (the ImageNet
classifiers, also used by the report tests, are in tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import NUDENET_LABELS, STYLE_BIAS, STYLE_LABELS, classifier_folder, nudenet_weights


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


@pytest.fixture(scope="session")
def style_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 4-style classifier whose logits are the constant bias [3, 2, 1, 0] (van Gogh ranks 2nd)."""
    return classifier_folder(tmp_path_factory.mktemp("style") / "ckpt", STYLE_LABELS, STYLE_BIAS)


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
