"""Every registered inversion method, through the generic API (parametrised over the registry, so a
new method is checked with no edit here): B images in one call equal B single calls; invert then
reconstruct comes back to the inverted latent on a smooth model; a fixed seed gives the same
result; progress counts the method's declared phases; bad option values are refused with a message
naming the option.

The model: a float64 copy of the tiny pipeline whose noise prediction is ``0.02·UNet(z, t, c) + F``,
``F`` a fixed unit-variance field. eps barely depends on z and on the text (the ODE is
well-behaved, CFG changes little) yet has the statistics of real noise predictions, which ReNoise's
regularisation assumes (on a UNet merely scaled down, eps ~ 1e-2, its KL step diverges). Float64
keeps batched and single UNet passes equal to rounding (Adam in null-text inversion would amplify
float32 rounding)."""
from __future__ import annotations

import copy
import dataclasses
import warnings

import pytest
import torch

from memtui.engine.core.options import describe
from memtui.engine.diffusion.ddim import ddim_sample
from memtui.engine.inversion.api import InversionConfig, call_phases, invert_images, invert_latents
from memtui.engine.inversion.config import inversion_problems
from memtui.engine.inversion.registry import get_method, method_names
from memtui.engine.model.pipeline import SDPipeline

PROMPTS = ["a red circle", "a blue square", "a photo of a dog"]
STEPS = 3
N = 2  # images


@dataclasses.dataclass
class SmoothPipeline(SDPipeline):
    """eps = ``scale``·UNet + ``field`` (``[1, C, h, w]``, broadcast over the batch)."""

    scale: float = 0.02
    field: torch.Tensor | None = None

    def eps(self, z: torch.Tensor, t, emb: torch.Tensor) -> torch.Tensor:
        return self.scale * super().eps(z, t, emb) + self.field.to(z.device)


@pytest.fixture(scope="module")
def smooth64(tiny_pipe):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = copy.deepcopy(tiny_pipe).to(dtype=torch.float64)
    field = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return SmoothPipeline(unet=p.unet, vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer,
                          scheduler_config=p.scheduler_config, source="smooth", field=field)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Three smooth random RGB images ``[3, 3, 32, 32]`` in [-1, 1]."""
    low = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)


def test_registry_lists_the_shipped_methods_first() -> None:
    names = method_names()
    assert names[:3] == ("ddim", "renoise", "nti") and len(set(names)) == len(names)


@pytest.fixture(scope="module")
def runs(smooth64, images):
    """Per method (computed once): the progress ticks and output of one call on ``N`` images, and
    ``N`` single-image calls."""
    cache: dict[str, tuple] = {}

    def get(name: str) -> tuple:
        if name not in cache:
            cfg = InversionConfig(method=name, steps=STEPS, seed=7)
            ticks: list[tuple[int, int]] = []
            batch = invert_images(smooth64, images[:N], PROMPTS[:N], cfg, progress=lambda d, n: ticks.append((d, n)))
            singles = [invert_images(smooth64, images[i:i + 1], PROMPTS[i:i + 1], cfg) for i in range(N)]
            cache[name] = (cfg, ticks, batch, singles)
        return cache[name]

    return get


@pytest.mark.parametrize("name", method_names())
def test_batch_equals_single_and_progress_counts_the_phases(runs, name) -> None:
    cfg, ticks, batch, singles = runs(name)
    total = sum(call_phases(cfg))
    assert ticks == [(d, total) for d in range(1, total + 1)]
    for field in ("z_0", "z_T", "z_0_hat", "images_hat"):
        got = getattr(batch, field)
        want = torch.cat([getattr(s, field) for s in singles])
        assert got.shape == want.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * max(1.0, float(want.abs().max())))
    assert batch.z_T.shape == batch.z_0.shape == (N, 4, 8, 8) and float(batch.images_hat.abs().max()) <= 1.0
    for key, value in batch.extras.items():  # per-item extras batch along dim 0 or 1 ([n, B, ...])
        dim = 1 if value.ndim >= 2 and value.shape[0] != N else 0
        torch.testing.assert_close(value, torch.cat([s.extras[key] for s in singles], dim=dim), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", method_names())
def test_fixed_seed_is_deterministic(smooth64, images, runs, name) -> None:
    cfg, _, _, singles = runs(name)
    again = invert_images(smooth64, images[:1], PROMPTS[:1], cfg)
    for field in ("z_0", "z_T", "z_0_hat", "images_hat"):
        assert torch.equal(getattr(again, field), getattr(singles[0], field)), field


@pytest.mark.parametrize("name", method_names())
def test_round_trip_on_a_smooth_model(smooth64, name) -> None:
    """Relative errors measured (10 steps): ddim 0.006, nti 0.03, renoise 0.33 — ReNoise's
    regularised noise estimates (KL + auto-correlation, official settings) are by design no exact
    inverse. An uninformed seed of the same model comes back 1.3 away."""
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    out = invert_latents(smooth64, z0, PROMPTS[:2], InversionConfig(method=name, steps=10))
    moved = float((out.z_T - z0).norm() / z0.norm())
    err = float((out.z_0_hat - z0).norm() / z0.norm())
    emb = smooth64.encode_prompts(PROMPTS[:2])
    blind = ddim_sample(smooth64, torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(12)), emb, 10)
    blind_err = float((blind - z0).norm() / z0.norm())
    assert moved > 1.0, moved             # the seed is far from the latent: a real noising ...
    assert err < 0.5 and err < blind_err / 3, (err, blind_err)  # ... yet reconstruction comes back


def _bad_values(info) -> list:
    if info.choices is not None:
        return ["not-a-choice"]
    if info.kind is bool:
        return ["yes"]
    if info.kind is str:
        return [12]
    if info.many is not None:
        n = info.many if isinstance(info.many, int) else 1
        return [[0] * (n + 1) if isinstance(info.many, int) else "x"]
    bad = ["many"]
    if info.minimum is not None:
        bad.append(info.minimum - 1)
    if info.maximum is not None:
        bad.append(info.maximum + 1)
    return bad


@pytest.mark.parametrize("name", method_names())
def test_options_round_trip_and_bad_values_name_the_option(name) -> None:
    cfg = InversionConfig(method=name)
    assert isinstance(cfg.options, get_method(name).Options)
    assert InversionConfig.from_dict(cfg.to_dict()) == cfg
    assert inversion_problems(name, {name: cfg.options.to_dict()}) == []
    for info in describe(get_method(name).Options):
        for bad in _bad_values(info):
            with pytest.raises(ValueError, match=info.name):
                InversionConfig.from_dict({"method": name, name: {info.name: bad}})
            assert any(info.name in p for p in inversion_problems(name, {name: {info.name: bad}})), (info.name, bad)
    with pytest.raises(ValueError, match="no_such_option"):
        InversionConfig.from_dict({"method": name, name: {"no_such_option": 1}})
