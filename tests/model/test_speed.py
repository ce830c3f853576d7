"""The speed settings of issue 16: chunked VAE calls, the automatic batch size (its arithmetic and
its probe, with a fake allocation meter standing in for CUDA's counters) and the spec's
``batch_size = "auto"`` / ``compile`` fields."""
from __future__ import annotations

import pytest
import torch

from memtui.engine import testkit as tk
from memtui.engine.core.device import OOM_MARKER
from memtui.engine.model.speed import MIB, auto_batch_size, batch_for_memory
from memtui.engine.runs.spec import AUTO_BATCH, DEFAULT_BATCH, RunSpec, SpecError


def test_vae_chunks_give_the_unchunked_latents_and_images():
    pipe = tk.tiny_pipeline()
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noise = torch.randn(5, *pipe.latent_shape(), generator=torch.Generator().manual_seed(1))
    whole_z = pipe.encode_images(x, noise=noise)
    whole_x = pipe.decode_latents(whole_z)
    calls: list[int] = []
    hook = pipe.vae.decoder.register_forward_pre_hook(lambda _m, a: calls.append(a[0].shape[0]))
    pipe.vae_chunk = 2
    z, y = pipe.encode_images(x, noise=noise), pipe.decode_latents(whole_z)
    hook.remove()
    assert calls == [2, 2, 1]  # the decoder saw at most vae_chunk images per call
    # per-image networks: the same numbers up to the CPU kernels' batch-dependent float32 rounding
    torch.testing.assert_close(z, whole_z, rtol=0, atol=1e-5)
    torch.testing.assert_close(y, whole_x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("free,fixed,per_item,cap,expected", [
    (1000, 100, 30, 64, 25),    # floor((850 - 100) / 30)
    (1000, 900, 30, 64, 1),     # the fixed cost alone exceeds the headroom: still one
    (10 ** 6, 0, 1, 64, 64),    # capped
    (1000, 0, 0, 8, 8),         # a zero per-item cost is read as one byte, then capped
])
def test_batch_for_memory(free, fixed, per_item, cap, expected):
    assert batch_for_memory(free, fixed, per_item, cap) == expected


class FakeMeter:
    """Allocation counters of a pretend device: ``work(b)`` peaks at ``fixed + b·per_item`` bytes."""

    def __init__(self, free: int, fixed: int, per_item: int) -> None:
        self.free_bytes, self.fixed, self.per_item = free, fixed, per_item
        self.resident, self.high = 7 * MIB, 0

    def start(self) -> int:
        self.high = self.resident
        return self.resident

    def work(self, b: int) -> None:
        self.high = max(self.high, self.resident + self.fixed + b * self.per_item)

    def peak(self) -> int:
        return self.high

    def free(self) -> int:
        return self.free_bytes


def test_auto_batch_size_measures_the_per_item_and_fixed_cost():
    m = FakeMeter(free=20_000 * MIB, fixed=1500 * MIB, per_item=600 * MIB)
    sizes: list[int] = []

    def work(b: int) -> None:
        sizes.append(b)
        m.work(b)

    batch, info = auto_batch_size("cuda", work, default=8, meter=m)
    assert sizes == [1, 2]
    assert info["per_item_mib"] == 600 and info["fixed_mib"] == 1500 and info["free_mib"] == 20_000
    assert batch == int((0.85 * 20_000 - 1500) // 600) == 25


def test_auto_batch_size_without_cuda_is_the_default_and_runs_nothing():
    batch, info = auto_batch_size("cpu", lambda b: pytest.fail("probed on the CPU"), default=DEFAULT_BATCH)
    assert batch == DEFAULT_BATCH and info["probed"] is False


def test_auto_batch_size_out_of_memory_while_probing_gives_one():
    m = FakeMeter(free=100 * MIB, fixed=0, per_item=MIB)

    def work(b: int) -> None:
        if b == 2:
            raise RuntimeError(f"CUDA {OOM_MARKER}. Tried to allocate 2 GiB")

    batch, info = auto_batch_size("cuda", work, default=8, meter=m)
    assert batch == 1 and "batch 2" in info["reason"]
    with pytest.raises(ValueError):  # anything else propagates
        auto_batch_size("cuda", lambda b: (_ for _ in ()).throw(ValueError("bad")), default=8, meter=m)


def test_spec_batch_size_auto_and_compile():
    spec = RunSpec(base="x", demo=True)
    assert spec.batch_size == AUTO_BATCH and spec.initial_batch_size() == DEFAULT_BATCH
    assert RunSpec(base="x", batch_size=3).initial_batch_size() == 3
    for bad in (0, "big", True, 2.5):
        with pytest.raises(SpecError, match="batch_size must be a positive integer or 'auto'"):
            RunSpec(base="x", batch_size=bad).validate()
    with pytest.raises(SpecError, match="compile must be true or false"):
        RunSpec(base="x", compile="yes").validate()
    a, b = RunSpec(base="x", batch_size=4), RunSpec(base="x", batch_size="auto", compile=True)
    assert a.differences(b) == {}  # neither changes results: resuming with them is allowed
