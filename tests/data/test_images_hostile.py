"""memtui.engine.data.images against hostile sizes (issue 12 item 6): images beyond ``MAX_PIXELS``
are refused from their header, before any decode; a size hint decodes large JPEGs reduced
(``draft``) and shrinks other large images at once, while normal sizes decode exactly as before."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from memtui.engine.data import images
from memtui.engine.data.images import MAX_PIXELS, ImageError, load_image, preprocess


def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims ``w``x``h`` (8-bit RGB) with a tiny IDAT: cheap to write, huge to decode."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_limit_is_documented_and_matches_pillows_guard() -> None:
    assert MAX_PIXELS == 8192 * 8192
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS
    assert "MAX_PIXELS" in (images.__doc__ or "")


@pytest.mark.parametrize("w,h", [(12000, 12000), (8193, 8192), (20000, 20000), (100000, 1000)])
def test_huge_images_refused_before_decoding(tmp_path: Path, w: int, h: int) -> None:
    p = _png_header_only(tmp_path / "huge.png", w, h)
    with pytest.raises(ImageError, match=r"huge\.png.*too large.*pixels"):
        load_image(p)
    with pytest.raises(ImageError, match="too large"):
        load_image(p, size=512)


def test_limit_itself_is_accepted_by_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "ok.png"
    Image.new("RGB", (40, 25), (1, 2, 3)).save(p)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    assert load_image(p).size == (40, 25)
    monkeypatch.setattr(images, "MAX_PIXELS", 999)
    with pytest.raises(ImageError, match="40x25"):
        load_image(p)


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 16, 1), max(w // 16, 1), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)


@pytest.mark.parametrize("fmt,side", [("JPEG", 512), ("JPEG", 1500), ("JPEG", 2047), ("PNG", 2047)])
def test_size_hint_keeps_normal_sizes_pixel_identical(tmp_path: Path, fmt: str, side: int) -> None:
    p = tmp_path / f"n.{fmt.lower()}"
    _noise(side, side - 7).save(p, fmt)
    full = load_image(p)
    hinted = load_image(p, size=512)
    assert hinted.size == full.size
    np.testing.assert_array_equal(np.asarray(hinted), np.asarray(full))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_size_hint_shrinks_large_images_close_to_the_full_path(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / f"big.{fmt.lower()}"
    _noise(4400, 4200, seed=3).save(p, fmt)
    full = load_image(p)
    hinted = load_image(p, size=256)
    assert min(hinted.size) >= 2 * 256 and max(hinted.size) < max(full.size) // 2 + 1
    a = preprocess(full, 256).numpy()
    b = preprocess(hinted, 256).numpy()
    assert np.abs(a - b).mean() < 0.02  # the same picture at the model's size (1 uint8 step = 0.0078)


def test_size_hint_with_alpha_and_palette(tmp_path: Path) -> None:
    rgba = np.zeros((2100, 2100, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 1050:, 3] = 255
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    out = np.asarray(load_image(p, size=256))
    assert out.shape[2] == 3 and out.shape[0] < 2100
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, -1].tolist() == [200, 0, 0]


def test_size_hint_keeps_16bit_scaling_and_transparency_keys(tmp_path: Path) -> None:
    v = np.full((2100, 2100), 65535, np.uint16)
    v[:, :1050] = 32768
    p16 = tmp_path / "g16.png"
    Image.fromarray(v).save(p16)
    out = np.asarray(load_image(p16, size=256))
    assert out[0, 0].tolist() == [128] * 3 and out[0, -1].tolist() == [255] * 3
    pal = Image.new("P", (2100, 2100), 1)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(0, (0, 0, 1050, 2100))
    pp = tmp_path / "pal.png"
    pal.save(pp, transparency=1)
    out = np.asarray(load_image(pp, size=256))
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, -1].tolist() == [255, 255, 255]
