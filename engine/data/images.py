"""Image input/output: robust RGB loading, the official preprocessing, postprocessing to uint8 and
atomic PNG writes. The [-1, 1] <-> uint8 conversions themselves live in ``core.tensors``.

Tensors are float32 ``[3, H, W]`` / ``[B, 3, H, W]`` in [-1, 1]; arrays are uint8 ``[H, W, 3]`` /
``[B, H, W, 3]``.

Mode handling of ``load_image`` / ``to_rgb`` (every result is 8-bit RGB):
- ``L``, ``1``, ``P`` (no transparency), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's conversion
  (grey replicated to 3 channels; CMYK by Pillow's naive formula, ICC profiles ignored).
- transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, ``P``/``L``/``RGB`` with a transparency
  key): **alpha-composited onto white** (``rgb·α + 255·(1−α)``, rounded), i.e. what a viewer shows.
  Dropping alpha (the official code's ``convert("RGB")``) would expose whatever colour hides under
  transparent pixels; ``alpha="drop"`` does that for strict reproduction.
- 16-bit grey (``I;16*``, and ``I``, which Pillow uses for 16-bit PNG/TIFF): scaled 0..65535 ->
  0..255 by ``round(v / 257)`` (Pillow's own conversion clips at 255 instead). ``F``: clipped to 0..255.
- EXIF orientation is ignored by default (as the official code); ``exif_transpose=True`` applies it.

Size limits (memory follows the model's size, not the input's):
- ``MAX_PIXELS`` (8192 x 8192 = 67,108,864 pixels): a larger image is refused from its header,
  before anything is decoded (``ImageError`` "too large", which the item loop records as an error).
  Pillow's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) is set to the same value.
- ``load_image(path, size=S)``: a hint that the image will be resized to ``S``x``S``. JPEGs are
  decoded reduced (``draft``, a DCT-domain 1/2, 1/4 or 1/8 scale) and other formats box-reduced by
  an integer factor right after decoding, in both cases never below ``DRAFT_MARGIN·S`` per side, so
  an image whose shorter side is under ``2·DRAFT_MARGIN·S`` decodes to exactly the same pixels as
  without the hint. Mode conversions work in row blocks (no full-size float copies).
"""
from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from memtui.engine.core.io import atomic_write_bytes
from memtui.engine.core.tensors import to_uint8, uint8_to_tensor  # to_uint8 re-exported

__all__ = ["ImageError", "MAX_PIXELS", "DRAFT_MARGIN", "load_image", "to_rgb", "preprocess",
           "preprocess_batch", "to_uint8", "tensor_to_pil", "save_png", "RESAMPLE"]

RESAMPLE: dict[str, Image.Resampling] = {
    "bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}


MAX_PIXELS = 8192 * 8192  # larger images are refused (documented in the module docstring)
DRAFT_MARGIN = 2  # a size hint never reduces an image below DRAFT_MARGIN x the target side
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's decompression-bomb guard, set to match
_BLOCK = 1 << 20  # pixels per block of the mode conversions


class ImageError(ValueError):
    """An image file that cannot be read or decoded (missing, corrupt, truncated, not an image,
    or larger than ``MAX_PIXELS``)."""


def _by_rows(img: Image.Image, fn: Callable[[np.ndarray], np.ndarray]) -> Image.Image:
    """Apply ``fn`` (an array of rows -> uint8 RGB rows) to ``img`` block by block -> RGB image."""
    w, h = img.size
    out = np.empty((h, w, 3), np.uint8)
    step = max(1, _BLOCK // max(w, 1))
    for y in range(0, h, step):
        out[y:y + step] = fn(np.asarray(img.crop((0, y, w, min(h, y + step)))))
    return Image.fromarray(out, "RGB")


def _white(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    alpha = a[..., 3:4] / 255.0
    return np.clip(np.rint(a[..., :3] * alpha + 255.0 * (1.0 - alpha)), 0, 255).astype(np.uint8)


def _grey(scale: float) -> Callable[[np.ndarray], np.ndarray]:
    def fn(v: np.ndarray) -> np.ndarray:
        g = np.clip(np.rint(v.astype(np.float64) / scale), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    return fn


def _composite_white(rgba: Image.Image) -> Image.Image:
    return _by_rows(rgba.convert("RGBA"), _white)


def to_rgb(img: Image.Image, alpha: Literal["white", "drop"] = "white") -> Image.Image:
    """Any Pillow image -> 8-bit RGB following the module's mode table (returns ``img`` if RGB)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        return _by_rows(img, _grey(257.0))
    if mode == "F":
        return _by_rows(img, _grey(1.0))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        return img.convert("RGB") if alpha == "drop" else _composite_white(img)
    return img.convert("RGB")


def _check_size(p: Path, im: Image.Image) -> None:
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"cannot read image {str(p)!r}: too large ({w}x{h} = {w * h:,} pixels; "
                         f"the limit is {MAX_PIXELS:,} pixels)")


def _reduce_factor(w: int, h: int, size: int | None) -> int:
    """The integer reduction keeping both sides >= ``DRAFT_MARGIN * size`` (1: none)."""
    if not size or size <= 0:
        return 1
    return max(1, min(w, h) // (DRAFT_MARGIN * size))


def load_image(path: str | os.PathLike[str], alpha: Literal["white", "drop"] = "white",
               exif_transpose: bool = False, size: int | None = None) -> Image.Image:
    """Read and fully decode an image file -> 8-bit RGB ``PIL.Image`` (first frame of animations).
    ``size``: the side it will be resized to; large images are then decoded or reduced to no less
    than ``DRAFT_MARGIN * size`` per side (see the module docstring). Raises ``ImageError`` naming
    the file if it is missing, unreadable, corrupt, truncated or beyond ``MAX_PIXELS``."""
    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # _check_size refuses
            with Image.open(p) as im:
                _check_size(p, im)
                if _reduce_factor(*im.size, size) > 1 and im.format == "JPEG" and size:
                    side = DRAFT_MARGIN * size
                    im.draft(im.mode, (side, side))  # decode at 1/2, 1/4 or 1/8 scale
                im.load()  # force a full decode: truncated/corrupt data fails here, not later
                if exif_transpose:
                    im = ImageOps.exif_transpose(im)
                out = _shrink(im, size)
                out = to_rgb(out, alpha)
                return out.copy() if out is im else out
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as e:
        if isinstance(e, Image.DecompressionBombError):
            reason = f"too large ({e}; the limit is {MAX_PIXELS:,} pixels)"
        elif isinstance(e, FileNotFoundError):
            reason = "file not found"
        else:
            reason = f"{type(e).__name__}: {e}"
        raise ImageError(f"cannot read image {str(p)!r}: {reason}") from e


def _shrink(im: Image.Image, size: int | None) -> Image.Image:
    """Box-reduce a decoded image by the integer factor of ``_reduce_factor``, keeping what
    ``to_rgb`` needs (16-bit values, transparency keys -> alpha); ``im`` itself when no reduction."""
    factor = _reduce_factor(*im.size, size)
    if factor <= 1:
        return im
    if "transparency" in im.info and im.mode in ("P", "L", "RGB", "1"):
        im = im.convert("RGBA")
    elif im.mode.startswith("I;16"):
        im = im.convert("I")  # keeps 0..65535 (to_rgb scales it)
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode == "P":
        im = im.convert("RGB")
    try:
        return im.reduce(factor)
    except ValueError:  # a mode this Pillow cannot reduce
        return to_rgb(im).reduce(factor)


def preprocess(img: Image.Image, size: int, resample: str = "bicubic") -> torch.Tensor:
    """Official preprocessing: RGB, resize to ``size``x``size`` ignoring aspect ratio (Pillow,
    bicubic by default; no-op at native size), ``x/127.5 − 1`` -> float32 [3, size, size] in [-1, 1]."""
    try:
        filt = RESAMPLE[resample]
    except KeyError:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE)}, got {resample!r}") from None
    rgb = to_rgb(img)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), filt)
    return uint8_to_tensor(np.asarray(rgb, dtype=np.uint8))


def preprocess_batch(imgs: Sequence[Image.Image], size: int, resample: str = "bicubic") -> torch.Tensor:
    """``preprocess`` each image -> float32 [B, 3, size, size] in [-1, 1]."""
    if len(imgs) == 0:
        return torch.empty(0, 3, size, size)
    return torch.stack([preprocess(im, size, resample) for im in imgs])


def tensor_to_pil(img: torch.Tensor | np.ndarray) -> Image.Image:
    """One image [3, H, W] in [-1, 1] -> RGB ``PIL.Image`` (via ``to_uint8``)."""
    return Image.fromarray(to_uint8(img), "RGB")


def save_png(image: Image.Image | np.ndarray | torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Write a PNG atomically (temp file in the same directory, fsync, ``os.replace``): readers see
    the old file or the complete new one, never a partial one. ``image``: PIL image, uint8 array
    [H, W, 3] / [H, W], or a tensor [3, H, W] in [-1, 1]."""
    if isinstance(image, torch.Tensor):
        pil = tensor_to_pil(image)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"arrays must be uint8, got {image.dtype}")
        pil = Image.fromarray(image)
    else:
        pil = image
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
