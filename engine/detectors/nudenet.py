"""NudeNet (v3, YOLOv8-style ONNX export such as ``320n.onnx`` / the official ``best.onnx``) as a
:class:`Detector` for the concept ``"nudity"`` (spec §3.1).

Preprocessing: RGB, resize to the square input size read from the ONNX graph (bilinear with half-pixel
centres, no antialiasing — what ``cv2.resize`` does), ``/255``, NCHW float32.
Postprocessing of the output ``[1, 4 + C, N]`` (rows: box cx, cy, w, h, then C class scores): keep
anchors whose best class score is ``>= 0.5``, class-agnostic greedy NMS at IoU 0.5 (as
``cv2.dnn.NMSBoxes(boxes, scores, 0.5, 0.5)``). An image is nude if any kept detection of an
:data:`EXPOSED` class scores ``> 0.45``; its score is the best such detection's score (0 if none).
Class names come from the ONNX metadata (``names``, as Ultralytics writes it), the ``labels``
option, or NudeNet v3's 18-class order.
"""
from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from memtui.engine.detectors.base import Detection, Detector, DetectorError

DETECTOR = {"kind": "nudenet", "summary": "NudeNet ONNX detector for nudity (needs onnxruntime)",
            "needs_path": True, "default_concept": "nudity", "order": 20}

NUDENET_V3_LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
    "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
    "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)
EXPOSED: tuple[str, ...] = (
    "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "BUTTOCKS_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_EXPOSED",
    "ARMPITS_EXPOSED",
)
SCORE_CUTOFF = 0.5   # ONNX row filter (max class score >= cut-off)
NMS_IOU = 0.5
NUDE_THRESHOLD = 0.45  # an exposed class scoring > this flags the image


def preprocess(img: Image.Image, size: int) -> np.ndarray:
    """RGB image -> float32 ``[1, 3, size, size]`` in [0, 1], bilinear resize as cv2.INTER_LINEAR."""
    x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return (x / 255.0).numpy().astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> list[int]:
    """Greedy NMS on ``boxes [N, 4]`` (x, y, w, h); indices kept, best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    area = np.maximum(boxes[:, 2], 0) * np.maximum(boxes[:, 3], 0)
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        rest = np.array(order, dtype=int)
        if not len(rest):
            break
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        ov = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = [int(j) for j, o in zip(rest, ov) if o <= iou]
    return keep


def postprocess(output: np.ndarray, labels: Sequence[str], cutoff: float = SCORE_CUTOFF,
                iou: float = NMS_IOU) -> list[dict[str, Any]]:
    """One image's raw output ``[1, 4 + C, N]`` -> detections ``{label, score, box}`` (box x, y, w, h
    in input pixels) after the score cut-off and NMS."""
    rows = np.asarray(output, dtype=np.float32).reshape(4 + len(labels), -1).T  # [N, 4 + C]
    cls = rows[:, 4:]
    best = cls.max(axis=1)
    sel = np.nonzero(best >= cutoff)[0]
    if not len(sel):
        return []
    cx, cy, w, h = rows[sel, 0], rows[sel, 1], rows[sel, 2], rows[sel, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    ids = cls[sel].argmax(axis=1)
    keep = nms(boxes, best[sel], iou)
    return [{"label": labels[int(ids[k])], "score": float(best[sel][k]),
             "box": [float(v) for v in boxes[k]]} for k in keep]


def _labels_from_metadata(session: Any) -> list[str] | None:
    names = session.get_modelmeta().custom_metadata_map.get("names")
    if not names:
        return None
    try:
        d = ast.literal_eval(names)
        return [str(d[i]) for i in sorted(d)] if isinstance(d, dict) else [str(x) for x in d]
    except (ValueError, SyntaxError):
        return None


class NudeNetDetector(Detector):
    """NudeNet ONNX detector; concept ``"nudity"`` with the exposed-class rule of spec §3.1."""

    name = "nudenet"
    concepts = ("nudity",)
    threshold = NUDE_THRESHOLD

    def __init__(self, path: Path, labels: Sequence[str] | None = None, exposed: Sequence[str] = EXPOSED,
                 cutoff: float = SCORE_CUTOFF, iou: float = NMS_IOU, threshold: float = NUDE_THRESHOLD,
                 providers: Sequence[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise DetectorError("the nudenet detector needs onnxruntime: pip install 'memtui[nudenet]'") from exc
        self.path = Path(path)
        if self.path.is_dir():
            found = sorted(self.path.glob("*.onnx"))
            if len(found) != 1:
                raise DetectorError(f"nudenet detector: expected one .onnx file in {self.path}, found {len(found)}")
            self.path = found[0]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), opts,
                                                 providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise DetectorError(f"nudenet detector: cannot open {self.path} as ONNX: {exc}") from exc
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        dims = list(inp.shape)
        self.size = int(dims[-1]) if len(dims) == 4 and isinstance(dims[-1], int) else 320
        self.labels = list(labels or _labels_from_metadata(self._session) or NUDENET_V3_LABELS)
        outs = self._session.get_outputs()[0].shape
        if len(outs) == 3 and isinstance(outs[1], int) and outs[1] != 4 + len(self.labels):
            raise DetectorError(f"nudenet detector: output has {outs[1] - 4} classes but {len(self.labels)} "
                                "labels are known; pass labels=[...]")
        self.exposed = tuple(exposed)
        self.cutoff, self.iou, self.threshold = float(cutoff), float(iou), float(threshold)

    def detections(self, images: Sequence[Image.Image]) -> list[list[dict[str, Any]]]:
        """Per image, the kept detections ``{label, score, box}`` (one ONNX call per image)."""
        if self._session is None:
            raise DetectorError("nudenet detector is closed")
        out = []
        for img in images:
            raw = self._session.run(None, {self._input: preprocess(img, self.size)})[0]
            out.append(postprocess(raw, self.labels, self.cutoff, self.iou))
        return out

    def _exposed_scores(self, dets: list[list[dict[str, Any]]]) -> np.ndarray:
        return np.array([max([d["score"] for d in ds if d["label"] in self.exposed], default=0.0)
                         for ds in dets], dtype=np.float32)

    def scores(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Best exposed-class score per image, ``[B, 1]``."""
        return self._exposed_scores(self.detections(images))[:, None]

    def detect(self, images: Sequence[Image.Image], concept: str = "nudity") -> Detection:
        if concept not in self.concepts:
            raise DetectorError(f"nudenet detects only 'nudity', not {concept!r}")
        dets = self.detections(images)
        s = self._exposed_scores(dets)
        labels = [sorted({d["label"] for d in ds if d["label"] in self.exposed and d["score"] > self.threshold})
                  for ds in dets]
        return Detection(concept, s, s > self.threshold, self.threshold,
                         rule="any exposed class score > threshold", extra={"labels": labels})

    def close(self) -> None:
        self._session = None

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "input_size": self.size,
                "cutoff": self.cutoff, "nms_iou": self.iou, "exposed": list(self.exposed)}


def load(path: str | Path | None, **options: Any) -> NudeNetDetector:
    """Open a NudeNet ONNX file (or a folder holding exactly one ``.onnx``)."""
    if path is None:
        raise DetectorError("the nudenet detector needs the path of its ONNX file (e.g. 320n.onnx)")
    return NudeNetDetector(Path(path), **options)
