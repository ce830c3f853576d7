"""What a UNet state dict's keys and shapes tell about its family (shared by the family modules)."""
from __future__ import annotations

from memtui.engine.model.families.base import Shapes

__all__ = ["has_added_embedding", "projection_ndim", "cross_attention_width", "is_full_unet"]


def has_added_embedding(shapes: Shapes) -> bool:
    """SDXL's pooled-text + time-id embedding (``add_embedding.*``)."""
    return any(k.startswith("add_embedding.") for k in shapes)


def projection_ndim(shapes: Shapes) -> int | None:
    """The rank of the transformer blocks' ``proj_in`` weights: 4 (1×1 conv, SD 1.x), 2 (linear:
    SD 2.x, SDXL), None when the dict has none."""
    for k, shape in shapes.items():
        if k.endswith("proj_in.weight") and "attentions" in k:
            return len(shape)
    return None


def cross_attention_width(shapes: Shapes) -> int | None:
    """The text width the cross-attention keys read (``attn2.to_k.weight`` is ``[inner, width]``):
    768 SD 1.x, 1024 SD 2.x, 2048 SDXL; None when the dict has none."""
    for k, shape in shapes.items():
        if k.endswith("attn2.to_k.weight") and len(shape) == 2:
            return int(shape[1])
    return None


def is_full_unet(shapes: Shapes) -> bool:
    """A whole UNet (its input convolution is there), not a partial fine-tune."""
    return "conv_in.weight" in shapes
