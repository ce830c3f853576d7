"""Speed settings of a loaded pipeline that leave its results alone (issue 16): ``channels_last``
memory format for the convolutional networks, an opt-in ``torch.compile`` of the UNet, chunked VAE
calls and a batch size chosen from free accelerator memory.

``channels_last`` is applied on CUDA in fp16/bf16 only: there it lets cuDNN pick its tensor-core
NHWC kernels; in fp32 the kernels chosen could differ in rounding, and fp32 results must not change.
Attention already runs through PyTorch's scaled-dot-product attention (diffusers' default
``AttnProcessor2_0`` on torch >= 2): :func:`attention_kinds` reports what is in use.

The automatic batch size (:func:`auto_batch_size`) is measured, not guessed: the run's own work
(inversion + reconstruction at the run's image size, 2 steps) runs at batch 1 and 2 while CUDA's
peak-allocation counter is read; the difference is one item's memory, the rest the fixed cost, and
the batch is what fits in :data:`HEADROOM` of the free memory. The loop's out-of-memory back-off
stays the safety net. Without CUDA the given default is used.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from memtui.engine.core.device import is_oom
from memtui.engine.model.pipeline import SDPipeline

__all__ = ["apply_speed_settings", "attention_kinds", "uses_channels_last", "compile_unet",
           "batch_for_memory", "auto_batch_size", "CudaMeter", "MAX_AUTO_BATCH", "HEADROOM", "VAE_CHUNK"]

MAX_AUTO_BATCH = 64  # beyond this a UNet batch gains nothing on one GPU and a crash loses more
HEADROOM = 0.85  # fraction of the free memory an automatic batch may plan to use
VAE_CHUNK = 8  # images per VAE call in runs: at 512 px the decoder's activations dominate memory
MIB = 2 ** 20


def uses_channels_last(pipe: SDPipeline) -> bool:
    """Whether :func:`apply_speed_settings` puts ``pipe``'s UNet and VAE in channels_last."""
    return pipe.device.type == "cuda" and pipe.dtype in (torch.float16, torch.bfloat16)


def compile_unet(pipe: SDPipeline, mode: str | None = None) -> bool:
    """Wrap the UNet in ``torch.compile`` (``mode``: torch's, e.g. ``max-autotune``); the first call
    of each new batch shape compiles (minutes at 512 px). Returns whether it wrapped (False when
    already compiled)."""
    if isinstance(pipe.unet, torch._dynamo.eval_frame.OptimizedModule):
        return False
    pipe.unet = torch.compile(pipe.unet, mode=mode)
    return True


def apply_speed_settings(pipe: SDPipeline, compile: bool = False, compile_mode: str | None = None) -> dict[str, Any]:
    """Set ``channels_last`` where it is safe (:func:`uses_channels_last`) and, with ``compile``,
    :func:`compile_unet`. Returns what was applied: ``{"channels_last": bool, "compiled": bool,
    "attention": [...]}``."""
    cl = uses_channels_last(pipe)
    if cl:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    compiled = compile_unet(pipe, compile_mode) if compile else False
    return {"channels_last": cl, "compiled": compiled, "attention": attention_kinds(pipe)}


def attention_kinds(pipe: SDPipeline) -> list[str]:
    """The attention processor classes of the UNet (``AttnProcessor2_0`` = PyTorch SDPA)."""
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
    procs = getattr(unet, "attn_processors", {}) or {}
    return sorted({type(p).__name__ for p in procs.values()})


def batch_for_memory(free: int, fixed: int, per_item: int, cap: int = MAX_AUTO_BATCH,
                     headroom: float = HEADROOM) -> int:
    """The largest batch ``b`` with ``fixed + b·per_item <= headroom·free`` (bytes), clamped to
    ``[1, cap]``."""
    room = headroom * free - fixed
    return max(1, min(cap, int(room // max(per_item, 1))))


class CudaMeter:
    """Allocation counters of one CUDA device, bytes (what :func:`auto_batch_size` reads)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> int:
        """Synchronize, reset the peak counter; the bytes allocated now."""
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device)

    def peak(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device)

    def free(self) -> int:
        """Free device memory plus what the caching allocator holds unused (it is reused first)."""
        torch.cuda.empty_cache()
        free, _total = torch.cuda.mem_get_info(self.device)
        return int(free) + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)


def auto_batch_size(device: str | torch.device, work: Callable[[int], None], default: int,
                    cap: int = MAX_AUTO_BATCH, meter: Any = None) -> tuple[int, dict[str, Any]]:
    """The batch size for ``work`` (``work(b)`` does one batch of ``b`` items of the run's real work)
    on ``device``: measured on CUDA (module docstring; ``meter`` defaults to :class:`CudaMeter`),
    ``default`` elsewhere. Returns ``(batch, info)``; ``info`` holds the measured MiB figures, or
    ``{"probed": False, "reason": ...}``. An out-of-memory error while probing gives 1."""
    dev = torch.device(device)
    if meter is None:
        if dev.type != "cuda":
            return default, {"probed": False, "reason": f"no memory probe on {dev.type}"}
        meter = CudaMeter(dev)
    peaks = []
    try:
        for b in (1, 2):
            base = meter.start()
            work(b)
            peaks.append(meter.peak() - base)
    except Exception as e:  # noqa: BLE001 - only out-of-memory is handled
        if not is_oom(e):
            raise
        return 1, {"probed": True, "reason": f"out of memory while probing at batch {len(peaks) + 1}"}
    per_item = max(peaks[1] - peaks[0], MIB)
    fixed = max(peaks[0] - per_item, 0)
    free = meter.free()
    batch = batch_for_memory(free, fixed, per_item, cap)
    return batch, {"probed": True, "free_mib": round(free / MIB, 1), "per_item_mib": round(per_item / MIB, 1),
                   "fixed_mib": round(fixed / MIB, 1), "headroom": HEADROOM, "cap": cap}
