"""The shared pieces under the item loop (``memtui.engine.core``): device / out-of-memory helpers,
the one [-1, 1] <-> uint8 conversion, durable JSONL and whole-file writes. No model needed."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from memtui.engine.core import device, io, tensors


def test_empty_cache_empties_the_accelerator_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("cuda"))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "empty_cache", lambda: calls.append("mps"))
    for dev, want in (("cuda", ["cuda"]), ("cuda:1", ["cuda"]), (torch.device("mps"), ["mps"]), ("cpu", []),
                      (None, ["cuda", "mps"])):
        calls.clear()
        device.empty_cache(dev)
        assert calls == want, dev


def test_is_oom_and_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert device.is_oom(torch.cuda.OutOfMemoryError("x"))
    assert device.is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert device.is_oom(RuntimeError("MPS backend out of memory"))
    assert not device.is_oom(RuntimeError("shape mismatch")) and not device.is_oom(ValueError("out of memory"))
    assert device.resolve_device("cuda:3") == "cuda:3"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device.resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert device.resolve_device("auto") == "mps"


def test_uint8_conversions_round_trip_and_match_diffusers() -> None:
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = tensors.uint8_to_tensor(px)
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.float32 and float(x.min()) >= -1 and float(x.max()) <= 1
    np.testing.assert_array_equal(tensors.to_uint8(x), px)                    # exact round trip
    np.testing.assert_array_equal(tensors.to_uint8(tensors.uint8_to_tensor(px[0])), px[0])  # single image
    y = torch.rand(1, 3, 4, 4) * 2.4 - 1.2                                     # out of range saturates
    expect = ((y / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(tensors.to_uint8(y), expect)
    with pytest.raises(ValueError, match="expected"):
        tensors.to_uint8(torch.zeros(1, 4, 2, 2))


def test_jsonl_append_read_and_torn_tail(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "log.jsonl"
    io.append_jsonl(p, {"a": math.inf, "b": np.float32(1.5), "c": (1, 2), "d": tmp_path})
    io.append_jsonl(p, {"n": np.arange(3)})
    with open(p, "ab") as f:
        f.write(b'{"torn": tr')
    assert io.read_jsonl(p) == [{"a": None, "b": 1.5, "c": [1, 2], "d": str(tmp_path)}, {"n": [0, 1, 2]}]
    assert io.truncate_torn_tail(p) == len(b'{"torn": tr') and p.read_bytes().endswith(b"\n")
    assert io.read_jsonl(tmp_path / "missing.jsonl") == []
    assert "\n" not in io.dumps_line({"x": "a\nb"})


def test_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    dest = tmp_path / "d" / "summary.json"
    io.atomic_write_text(dest, json.dumps({"v": 1}))
    io.atomic_write_bytes(dest, b'{"v": 2}')
    assert json.loads(dest.read_text()) == {"v": 2} and [q.name for q in dest.parent.iterdir()] == ["summary.json"]
    assert oct(dest.stat().st_mode & 0o777) == "0o644"
    assert io.utc_now().endswith("Z") and len(io.utc_now()) == len("2026-11-28T13:05:01.123Z")
