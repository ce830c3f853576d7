"""Each detector adapter on a tiny fake model of its on-disk format, checked against independent
computations (hand-derived outputs of the fake graph, direct model calls + softmax)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from memtui.engine.detectors import DetectorError, load_detector

from tests.helpers import STYLE_BIAS


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> Image.Image:
    return Image.new("RGB", size, rgb)


# ---------------------------------------------------------------- NudeNet
def test_nudenet_rule_cutoff_and_nms(nudenet_onnx) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'memtui[nudenet]')")
    imgs = [solid((255, 0, 0)), solid((0, 0, 255)), solid((153, 0, 0)), solid((122, 0, 0))]
    with load_detector("nudenet", nudenet_onnx) as det:
        assert det.size == 32  # read from the graph's input
        d = det.detect(imgs, "nudity")
        dets = det.detections(imgs[:1])[0]
    # red: anchor 0 (breast exposed, 1.0) kept; anchor 1 (belly, 0.9, IoU 0.82) suppressed by NMS;
    # blue: only the face (not an exposed class); 153/255 = 0.6 flagged; 122/255 = 0.478 is under the
    # 0.5 cut-off, so not flagged although > 0.45
    np.testing.assert_allclose(d.scores, [1.0, 0.0, 153 / 255, 0.0], atol=1e-6)
    assert d.flags.tolist() == [True, False, True, False]
    assert [x["label"] for x in dets] == ["FEMALE_BREAST_EXPOSED"]
    np.testing.assert_allclose(dets[0]["box"], [11, 11, 10, 10])
    assert d.extra["labels"][0] == ["FEMALE_BREAST_EXPOSED"]


def test_nudenet_nms_matches_hand_result() -> None:
    from memtui.engine.detectors.nudenet import nms

    boxes = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [20, 20, 5, 5], [0, 5, 10, 10]], float)
    scores = np.array([0.6, 0.9, 0.7, 0.8])
    # 1 (0.9) suppresses 0 (IoU 0.82); 3 overlaps 1 with IoU 45/155 = 0.29 < 0.5 -> kept
    assert nms(boxes, scores, 0.5) == [1, 3, 2]


def test_nudenet_closed_and_missing_package_messages(nudenet_onnx, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    det = load_detector("nudenet", nudenet_onnx)
    det.close()
    with pytest.raises(DetectorError, match="closed"):
        det.detect([solid((1, 2, 3))], "nudity")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(DetectorError, match="cannot open"):
        load_detector("nudenet", bad)


# ---------------------------------------------------------------- ImageNet
def _direct_probs(folder, images) -> np.ndarray:
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    proc = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        logits = model(**proc(images=images, return_tensors="pt")).logits.double().numpy()
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_imagenet_scores_equal_direct_softmax(imagenet_dirs) -> None:
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)) for _ in range(3)]
    with load_detector("imagenet", imagenet_dirs["random"], device="cpu") as det:
        d = det.detect(imgs, "garbage_truck")
        s = det.scores(imgs)
    p = _direct_probs(imagenet_dirs["random"], imgs)
    np.testing.assert_allclose(d.scores, p[:, 569], rtol=1e-4)
    assert d.flags.tolist() == (p.argmax(1) == 569).tolist()
    np.testing.assert_allclose(s[:, list(det.concepts).index("parachute")], p[:, 701], rtol=1e-4)


def test_imagenet_argmax_rule(imagenet_dirs) -> None:
    imgs = [solid((10, 200, 30)), solid((250, 250, 250))]
    with load_detector("imagenet", imagenet_dirs["church"], device="cpu") as det:
        church = det.detect(imgs, "church")
        tench = det.detect(imgs, "tench")
        with pytest.raises(DetectorError, match="does not know"):
            det.detect(imgs, "zebra")
    expected = np.exp(5) / (np.exp(5) + 999)
    np.testing.assert_allclose(church.scores, [expected] * 2, rtol=1e-5)
    assert church.flags.all() and not tench.flags.any()
    np.testing.assert_allclose(tench.scores, [1 / (np.exp(5) + 999)] * 2, rtol=1e-5)


# ---------------------------------------------------------------- style
def test_style_top_k_rule_and_rank(style_dir) -> None:
    imgs = [solid((1, 2, 3)), solid((200, 100, 0))]
    p = np.exp(STYLE_BIAS) / np.exp(STYLE_BIAS).sum()
    with load_detector("style", style_dir, device="cpu", top_k=2) as det:
        d = det.detect(imgs)  # default concept: vincent-van-gogh
    with load_detector("style", style_dir, device="cpu", top_k=1) as det1:
        d1 = det1.detect(imgs, "vincent-van-gogh")
    np.testing.assert_allclose(d.scores, [p[1]] * 2, rtol=1e-5)
    assert d.extra["rank"] == [2, 2] and d.flags.all()
    assert not d1.flags.any()


# ---------------------------------------------------------------- CLIP
def test_clip_cosine_equals_model_logits(clip_dir) -> None:
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    rng = np.random.default_rng(1)
    imgs = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]
    texts = {"church": "a photo of the church", "dog": "a red dog"}
    with load_detector("clip", clip_dir, texts=texts, threshold=0.0, device="cpu") as det:
        s = det.scores(imgs)
        d = det.detect(imgs, "a red dog")  # free text
    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir, local_files_only=True)
    proc = AutoImageProcessor.from_pretrained(clip_dir, local_files_only=True)
    with torch.no_grad():
        out = model(input_ids=tok(list(texts.values()), padding=True, return_tensors="pt").input_ids,
                    pixel_values=proc(images=imgs, return_tensors="pt").pixel_values)
    cos = (out.logits_per_image / model.logit_scale.exp()).detach().numpy()
    np.testing.assert_allclose(s, cos, atol=1e-5)
    np.testing.assert_allclose(d.scores, cos[:, 1], atol=1e-5)
    assert d.flags.tolist() == (cos[:, 1] >= 0).tolist()


# ---------------------------------------------------------------- registry errors
def test_missing_detector_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DetectorError, match="does not exist"):
        load_detector("nudenet", tmp_path / "nope.onnx")
    with pytest.raises(DetectorError, match="not a transformers model folder"):
        load_detector("imagenet", tmp_path)
