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
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from memtui.engine.core.io import atomic_write_bytes
from memtui.engine.core.tensors import to_uint8, uint8_to_tensor  # to_uint8 re-exported

__all__ = ["ImageError", "load_image", "to_rgb", "preprocess", "preprocess_batch", "to_uint8",
           "tensor_to_pil", "save_png", "RESAMPLE"]

RESAMPLE: dict[str, Image.Resampling] = {
    "bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}


class ImageError(ValueError):
    """An image file that cannot be read or decoded (missing, corrupt, truncated, not an image)."""


def _composite_white(rgba: Image.Image) -> Image.Image:
    a = np.asarray(rgba.convert("RGBA"), dtype=np.float64)
    alpha = a[..., 3:4] / 255.0
    rgb = a[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")


def to_rgb(img: Image.Image, alpha: Literal["white", "drop"] = "white") -> Image.Image:
    """Any Pillow image -> 8-bit RGB following the module's mode table (returns ``img`` if RGB)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        v = np.asarray(img).astype(np.float64)
        g = np.clip(np.rint(v / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(g, "L").convert("RGB")
    if mode == "F":
        g = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(g, "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        return img.convert("RGB") if alpha == "drop" else _composite_white(img)
    return img.convert("RGB")


def load_image(path: str | os.PathLike[str], alpha: Literal["white", "drop"] = "white",
               exif_transpose: bool = False) -> Image.Image:
    """Read and fully decode an image file -> 8-bit RGB ``PIL.Image`` (first frame of animations).
    Raises ``ImageError`` naming the file if it is missing, unreadable, corrupt or truncated."""
    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()  # force a full decode: truncated/corrupt data fails here, not later
            if exif_transpose:
                im = ImageOps.exif_transpose(im)
            out = to_rgb(im, alpha)
            return out.copy() if out is im else out
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as e:
        reason = "file not found" if isinstance(e, FileNotFoundError) else f"{type(e).__name__}: {e}"
        raise ImageError(f"cannot read image {str(p)!r}: {reason}") from e


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
