"""memtui.engine.data.images: mode conversion by pixel values, errors, preprocessing round trip, atomic PNGs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from memtui.engine.data.images import (ImageError, load_image, preprocess, preprocess_batch, save_png,
                                  tensor_to_pil, to_uint8)

pytestmark = pytest.mark.usefixtures("_one_thread")  # single-threaded torch: see tests/conftest.py


def _roundtrip(img: Image.Image, tmp_path: Path, fmt: str = "PNG", **kw) -> Image.Image:
    p = tmp_path / f"img.{fmt.lower()}"
    img.save(p, fmt)
    return load_image(p, **kw)


def _px(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


def test_grey_and_bilevel(tmp_path: Path) -> None:
    g = np.array([[0, 17], [128, 255]], np.uint8)
    out = _px(_roundtrip(Image.fromarray(g, "L"), tmp_path))
    np.testing.assert_array_equal(out, np.repeat(g[..., None], 3, axis=2))
    bw = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    np.testing.assert_array_equal(_px(_roundtrip(bw, tmp_path))[..., 1], [[0, 255], [255, 0]])


def test_alpha_composited_on_white_or_dropped(tmp_path: Path) -> None:
    rgba = np.array([[[200, 100, 0, 255], [200, 100, 0, 0]], [[200, 100, 0, 128], [10, 20, 30, 51]]], np.uint8)
    img = Image.fromarray(rgba, "RGBA")
    out = _px(_roundtrip(img, tmp_path)).astype(int)
    a = rgba[..., 3:4] / 255.0
    expect = np.rint(rgba[..., :3] * a + 255 * (1 - a)).astype(int)
    np.testing.assert_array_equal(out, expect)
    assert out[0, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [200, 100, 0]
    dropped = _px(_roundtrip(img, tmp_path, alpha="drop"))
    np.testing.assert_array_equal(dropped, rgba[..., :3])
    la = Image.fromarray(np.array([[[40, 255], [40, 0]]], np.uint8), "LA")
    np.testing.assert_array_equal(_px(_roundtrip(la, tmp_path))[0, :, 0], [40, 255])


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    np.testing.assert_array_equal(_px(_roundtrip(pal, tmp_path))[0], [[255, 0, 0], [0, 0, 255]])
    pal.info["transparency"] = 1  # index 1 (blue) fully transparent -> white
    p = tmp_path / "t.png"
    pal.save(p, transparency=1)
    np.testing.assert_array_equal(_px(load_image(p))[0], [[255, 0, 0], [255, 255, 255]])


def test_16bit_scaled_not_clipped(tmp_path: Path) -> None:
    v = np.array([[0, 257, 32768], [65535, 1000, 128]], np.uint16)
    out = _px(_roundtrip(Image.fromarray(v), tmp_path))[..., 0]
    np.testing.assert_array_equal(out, [[0, 1, 128], [255, 4, 0]])
    i32 = Image.fromarray(v.astype(np.int32), "I")
    np.testing.assert_array_equal(_px(_roundtrip(i32, tmp_path, fmt="TIFF"))[..., 2], out)


def test_cmyk(tmp_path: Path) -> None:
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]], np.uint8)
    out = _px(_roundtrip(Image.fromarray(cmyk, "CMYK"), tmp_path, fmt="JPEG"))
    assert np.abs(out[0, 0].astype(int) - 255).max() < 12          # white
    assert out[0, 1, 0] < 60 and out[0, 1, 1] > 190                # cyan: low red, high green/blue
    assert out[0, 2].max() < 60                                     # black


def test_unreadable_files_raise_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="junk.png"):
        load_image(junk)
    rng = np.random.default_rng(0)
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError, match="trunc.png"):
        load_image(trunc)
    assert issubclass(ImageError, ValueError)


def test_preprocess_roundtrip_and_resize() -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    t = preprocess(Image.fromarray(arr), 16)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), arr / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(to_uint8(t[None])[0], arr)
    np.testing.assert_array_equal(np.asarray(tensor_to_pil(t)), arr)
    wide = Image.fromarray(rng.integers(0, 256, (10, 30, 3), dtype=np.uint8))
    expect = np.asarray(wide.resize((8, 8), Image.Resampling.BICUBIC)) / 127.5 - 1
    np.testing.assert_allclose(preprocess(wide, 8).permute(1, 2, 0).numpy(), expect, atol=1e-6)
    grey = Image.fromarray(arr[..., 0], "L")
    assert preprocess_batch([grey, Image.fromarray(arr)], 8).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError):
        preprocess(wide, 8, "cubic-ish")


def test_to_uint8_clamps_and_rounds() -> None:
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0, 0.5]).reshape(1, 3, 1, 2)
    out = to_uint8(x)
    assert out.shape == (1, 1, 2, 3) and out.dtype == np.uint8
    ref = np.round(np.clip(x.numpy() / 2 + 0.5, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(out[0, 0, :, :].T.ravel(), [0, 0, 128, 255, 255, 191])


def test_save_png_atomic_and_roundtrips(tmp_path: Path) -> None:
    arr = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    dest = tmp_path / "sub" / "x.png"
    save_png(arr, dest)
    save_png(Image.fromarray(arr[::-1].copy()), dest)  # overwrite in place
    np.testing.assert_array_equal(np.asarray(Image.open(dest)), arr[::-1])
    save_png(torch.zeros(3, 4, 4), tmp_path / "t.png")
    assert np.asarray(Image.open(tmp_path / "t.png")).tolist()[0][0] == [128, 128, 128]
    assert sorted(os.listdir(dest.parent)) == ["x.png"]

    class Boom:
        def save(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_png(Boom(), dest)  # type: ignore[arg-type]
    assert sorted(os.listdir(dest.parent)) == ["x.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(dest)), arr[::-1])
