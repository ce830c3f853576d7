"""The "detectors join a run" hook: score the saved images of a run's finished items with each
named detector, add the results to the items' records and the detection rates to summary.json.

Per item (a new record appended to ``results.jsonl``; the latest record per id wins)::

    "detections": {"<kind>:<concept>": {"recon": {"score": s, "flag": f, ...}, "query": {...}}}

scoring every image the record names: ``recon`` (the reconstruction), ``query`` (the input) and
``image`` (a generated image). summary.json gets ``detection``::

    {"<kind>:<concept>": {"kind", "concept", "threshold", "rule", "detector": {...},
                          "sets": {"<set>": {"n": items, "recon_rate": 0..1, "recon_score_mean": ...,
                                             "query_rate": ..., ...}}}}

Idempotent: items already scored by a detector are skipped, so it can run after every resume.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from memtui.engine.detectors import DetectorError, load_detector
from memtui.engine.detectors.config import detector_problems, entry_key, normalize_entries, resolve_concept

IMAGE_FIELDS = ("recon", "query", "image")

__all__ = ["apply_detectors", "detection_summary", "IMAGE_FIELDS"]


def _per_image_extra(extra: dict[str, Any], n: int, i: int) -> dict[str, Any]:
    return {k: v[i] for k, v in extra.items() if isinstance(v, list) and len(v) == n}


def detection_summary(records: dict[str, dict[str, Any]], meta: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Detection rates per detector key and set from item records (``ok`` records only)."""
    out: dict[str, Any] = {}
    for key, m in meta.items():
        sets: dict[str, dict[str, Any]] = {}
        for rec in records.values():
            det = (rec.get("detections") or {}).get(key)
            if rec.get("status") != "ok" or not det:
                continue
            s = sets.setdefault(str(rec.get("set", "all")), {"n": 0, "_v": {}})
            s["n"] += 1
            for field, res in det.items():
                s["_v"].setdefault(field, []).append((float(res["score"]), bool(res["flag"])))
        for s in sets.values():
            for field, vals in sorted(s.pop("_v").items()):
                scores = np.array([v[0] for v in vals], np.float64)
                s[f"{field}_rate"] = float(np.mean([v[1] for v in vals]))
                s[f"{field}_detected"] = int(sum(v[1] for v in vals))
                s[f"{field}_score_mean"] = float(scores.mean())
                s[f"{field}_score_std"] = float(scores.std()) if len(scores) > 1 else math.nan
        out[key] = {**m, "sets": sets}
    return out


def apply_detectors(run_dir: Any, detectors: Any, spec: Any = None,
                    progress: Callable[[str, int, int], None] | None = None,
                    batch_size: int = 32) -> dict[str, Any]:
    """Score the finished items of ``run_dir`` with ``detectors`` (CLI string, or a list of
    strings / tables, see :mod:`.config`); returns (and writes into summary.json) the
    ``detection`` summary. Raises :class:`DetectorError` before scoring anything if a detector
    is unknown, its file is missing or its concept cannot be determined."""
    from PIL import Image

    from memtui.engine.runs.store import RunDir

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)
    if spec is None:
        spec = rd.read_spec()
    probs = detector_problems(detectors)
    if probs:
        raise DetectorError("; ".join(probs))
    entries = normalize_entries(detectors)
    for e in entries:
        e["concept"] = resolve_concept(e, spec)
        if not e["concept"]:
            raise DetectorError(f"the {e['kind']} detector needs a concept: write {e['kind']}[:PATH]@CONCEPT "
                                "or set options.concept in the spec")
    records = rd.read_results()
    summary = rd.read_summary() or {}
    meta: dict[str, dict[str, Any]] = {k: {f: v for f, v in m.items() if f != "sets"}
                                       for k, m in (summary.get("detection") or {}).items()}
    updated: dict[str, dict[str, Any]] = {}
    for e in entries:
        key = entry_key(e["kind"], e["concept"])
        todo = [(iid, f) for iid, r in records.items() if r.get("status") == "ok"
                and key not in (r.get("detections") or {})
                for f in IMAGE_FIELDS if isinstance(r.get(f), str)]
        path = os.path.expanduser(str(e["path"])) if e["path"] else None
        with load_detector(e["kind"], path, **e["options"]) as det:
            probe = det.detect([], e["concept"])  # checks the concept before any image is read
            meta[key] = {"kind": e["kind"], "concept": e["concept"], "threshold": probe.threshold,
                         "rule": probe.rule, "detector": det.describe()}
            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                imgs = []
                for iid, f in chunk:
                    with Image.open(rd.path / records[iid][f]) as im:
                        imgs.append(im.convert("RGB"))
                d = det.detect(imgs, e["concept"])
                for i, (iid, f) in enumerate(chunk):
                    rec = updated.setdefault(iid, {**records[iid]})
                    dets = rec.setdefault("detections", {})
                    dets = rec["detections"] = {**dets}
                    dets[key] = {**dets.get(key, {}), f: {"score": float(d.scores[i]), "flag": bool(d.flags[i]),
                                                          **_per_image_extra(d.extra, len(chunk), i)}}
                    records[iid] = rec
                if progress is not None:
                    progress(key, min(start + batch_size, len(todo)), len(todo))
    for rec in updated.values():
        rd.append_result(rec)
    detection = detection_summary(rd.read_results(), meta)
    rd.write_summary({**(rd.read_summary() or {}), "detection": detection})
    return detection
