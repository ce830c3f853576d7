"""Speed settings of a loaded pipeline that leave its results alone (issue 16): ``channels_last``
memory format for the convolutional networks and an opt-in ``torch.compile`` of the UNet.

``channels_last`` is applied on CUDA in fp16/bf16 only: there it lets cuDNN pick its tensor-core
NHWC kernels; in fp32 the kernels chosen could differ in rounding, and fp32 results must not change.
Attention already runs through PyTorch's scaled-dot-product attention (diffusers' default
``AttnProcessor2_0`` on torch >= 2): :func:`attention_kinds` reports what is in use.
"""
from __future__ import annotations

from typing import Any

import torch

from memtui.engine.model.pipeline import SDPipeline

__all__ = ["apply_speed_settings", "attention_kinds", "uses_channels_last"]


def uses_channels_last(pipe: SDPipeline) -> bool:
    """Whether :func:`apply_speed_settings` puts ``pipe``'s UNet and VAE in channels_last."""
    return pipe.device.type == "cuda" and pipe.dtype in (torch.float16, torch.bfloat16)


def apply_speed_settings(pipe: SDPipeline, compile: bool = False, compile_mode: str | None = None) -> dict[str, Any]:
    """Set ``channels_last`` where it is safe (:func:`uses_channels_last`) and, with ``compile``,
    wrap the UNet in ``torch.compile`` (``compile_mode``: torch's ``mode``, e.g. ``max-autotune``;
    the first calls of each new batch shape compile, minutes at 512 px). Returns what was applied:
    ``{"channels_last": bool, "compiled": bool, "attention": [...]}``."""
    cl = uses_channels_last(pipe)
    if cl:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    compiled = False
    if compile and not isinstance(pipe.unet, torch._dynamo.eval_frame.OptimizedModule):
        pipe.unet = torch.compile(pipe.unet, mode=compile_mode)
        compiled = True
    return {"channels_last": cl, "compiled": compiled, "attention": attention_kinds(pipe)}


def attention_kinds(pipe: SDPipeline) -> list[str]:
    """The attention processor classes of the UNet (``AttnProcessor2_0`` = PyTorch SDPA)."""
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
    procs = getattr(unet, "attn_processors", {}) or {}
    return sorted({type(p).__name__ for p in procs.values()})
