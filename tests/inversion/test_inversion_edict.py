"""EDICT (Wallace et al. 2023) against hand-written formulas of the paper (Sec. 3.2): exactness of
invert-then-sample in float64 on the random tiny UNet, one sampling step by hand, the inverse step,
batching, reduced precision, option validation and the generic API."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from memtui.engine.inversion.api import InversionConfig, call_phases, invert_images
from memtui.engine.inversion.edict import edict_coefficients, edict_invert, edict_sample, edict_step, edict_step_inverse
from memtui.engine.inversion.methods.edict import EDICTInversion, EDICTOptions
from memtui.engine.inversion.registry import get_method, method_names
from tests.inversion.schedule import sd14_alphas_cumprod

pytestmark = pytest.mark.usefixtures("_one_thread")  # single-threaded torch: see tests/conftest.py

PROMPTS = ["a red circle", "a blue square", "a photo of a dog"]


def hand_coefficients(t: int, steps: int) -> tuple[float, float]:
    """The DDIM map z -> a·z + b·eps from level alphas_cumprod[t] to one stride below (or [0])."""
    ac = sd14_alphas_cumprod(float32=True)
    a_t, a_s = ac[t], ac[max(t - 1000 // steps, 0)]
    a = np.sqrt(a_s / a_t)
    return float(a), float(np.sqrt(1 - a_s) - a * np.sqrt(1 - a_t))


@pytest.fixture(scope="module")
def pipe64(tiny_pipe):
    """A float64 copy of the tiny pipeline (its random UNet, not smoothed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return copy.deepcopy(tiny_pipe).to(dtype=torch.float64)


@pytest.fixture(scope="module")
def emb(tiny_pipe) -> torch.Tensor:
    return tiny_pipe.encode_prompts(PROMPTS)


@pytest.mark.parametrize("guidance, leapfrog", [(1.0, False), (3.0, False), (1.0, True)])
def test_invert_then_sample_is_exact_in_float64(pipe64, z0, guidance, leapfrog):
    """Measured max |x_0 − z0| (and |y_0 − z0|) over 768 entries, 10 steps, p = 0.93: 1.9e-14 at
    guidance 1, 7.8e-14 at guidance 3, 2.6e-14 with the leapfrog alternation."""
    emb = pipe64.encode_prompts(PROMPTS)
    x_T, y_T = edict_invert(pipe64, z0.double(), emb, 10, p=0.93, guidance=guidance, leapfrog=leapfrog)
    assert x_T.dtype == y_T.dtype == torch.float64 and x_T.shape == y_T.shape == z0.shape
    assert float((x_T - z0.double()).abs().max()) > 1.0 and not torch.allclose(x_T, y_T)  # a real noising
    x0, y0 = edict_sample(pipe64, x_T, y_T, emb, 10, p=0.93, guidance=guidance, leapfrog=leapfrog)
    err = max(float((x0 - z0.double()).abs().max()), float((y0 - z0.double()).abs().max()))
    assert err < 1e-10, err


@pytest.mark.parametrize("guidance, leapfrog", [(1.0, False), (3.0, False), (3.0, True)])
def test_sampling_steps_match_the_paper_by_hand(pipe64, guidance, leapfrog):
    """Two sampling steps (t = 501, 1; the second swapped with leapfrog) computed here with
    ``pipe.eps`` and numpy coefficients, CFG from separate unconditional / conditional passes."""
    steps, p = 2, 0.9
    gen = torch.Generator().manual_seed(3)
    x_T, y_T = torch.randn(2, 4, 8, 8, generator=gen).double(), torch.randn(2, 4, 8, 8, generator=gen).double()
    emb = pipe64.encode_prompts(PROMPTS[:2])
    unc = pipe64.encode_prompts(["", ""])

    def eps(z, t):
        e_c = pipe64.eps(z, t, emb)
        return e_c if guidance == 1.0 else pipe64.eps(z, t, unc) + guidance * (e_c - pipe64.eps(z, t, unc))

    assert [t for t, _, _ in edict_coefficients(pipe64, steps)] == [501, 1]
    x, y = x_T.clone(), y_T.clone()
    with torch.no_grad():
        for i, t in enumerate([501, 1]):
            a, b = hand_coefficients(t, steps)
            if leapfrog and i % 2 == 1:
                y_i = a * y + b * eps(x, t)
                x_i = a * x + b * eps(y_i, t)
            else:
                x_i = a * x + b * eps(y, t)
                y_i = a * y + b * eps(x_i, t)
            x = p * x_i + (1 - p) * y_i
            y = p * y_i + (1 - p) * x
    got_x, got_y = edict_sample(pipe64, x_T, y_T, emb, steps, p=p, guidance=guidance, leapfrog=leapfrog)
    torch.testing.assert_close(got_x, x, rtol=0, atol=1e-10)
    torch.testing.assert_close(got_y, y, rtol=0, atol=1e-10)


def test_coefficients_follow_the_ddim_schedule(tiny_pipe):
    coefs = edict_coefficients(tiny_pipe, 50)
    assert [t for t, _, _ in coefs] == list(range(981, 0, -20))
    for t, a, b in coefs[::7] + coefs[-1:]:
        np.testing.assert_allclose((a, b), hand_coefficients(t, 50), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("swap", [False, True])
def test_inverse_step_undoes_the_step(pipe64, swap):
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(3, 4, 8, 8, generator=gen).double(), torch.randn(3, 4, 8, 8, generator=gen).double()
    emb = pipe64.encode_prompts(PROMPTS)
    unc = pipe64.encode_prompts([""] * 3)
    t, a, b = edict_coefficients(pipe64, 50)[10]
    with torch.no_grad():
        x1, y1 = edict_step(pipe64, x, y, t, a, b, emb, 0.93, 2.0, unc, swap=swap)
        assert float((x1 - x).abs().max()) > 1e-2
        x2, y2 = edict_step_inverse(pipe64, x1, y1, t, a, b, emb, 0.93, 2.0, unc, swap=swap)
    torch.testing.assert_close(x2, x, rtol=0, atol=1e-12)
    torch.testing.assert_close(y2, y, rtol=0, atol=1e-12)


def test_batch_equals_single_calls(tiny_pipe, z0, emb):
    steps = 5
    xb, yb = edict_invert(tiny_pipe, z0, emb, steps, guidance=3.0)
    singles = [edict_invert(tiny_pipe, z0[i:i + 1], emb[i:i + 1], steps, guidance=3.0) for i in range(3)]
    tol = 1e-5 * float(xb.abs().max())
    torch.testing.assert_close(xb, torch.cat([s[0] for s in singles]), rtol=0, atol=tol)
    torch.testing.assert_close(yb, torch.cat([s[1] for s in singles]), rtol=0, atol=tol)
    back = edict_sample(tiny_pipe, xb, yb, emb, steps, guidance=3.0)
    back1 = [edict_sample(tiny_pipe, xb[i:i + 1], yb[i:i + 1], emb[i:i + 1], steps, guidance=3.0) for i in range(3)]
    # float32 rounding of the 6-item vs 2-item UNet passes, grown by the coupling (measured 3.2e-5; seeds 5.8e-6)
    torch.testing.assert_close(back[0], torch.cat([s[0] for s in back1]), rtol=0, atol=1e-4)
    torch.testing.assert_close(back[1], torch.cat([s[1] for s in back1]), rtol=0, atol=1e-4)
    torch.testing.assert_close(back[0], z0, rtol=0, atol=1e-4)  # float32 round trip: measured 1.8e-5


def test_progress_once_per_step(tiny_pipe, z0, emb):
    ticks: list[tuple[int, int]] = []
    x, y = edict_invert(tiny_pipe, z0[:1], emb[:1], 3, progress=lambda d, n: ticks.append((d, n)))
    edict_sample(tiny_pipe, x, y, emb[:1], 3, progress=lambda d, n: ticks.append((d, n)))
    assert ticks == [(1, 3), (2, 3), (3, 3)] * 2


@pytest.mark.parametrize("dtype, bound", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_reduced_precision_is_finite_and_close_to_fp32(tiny_pipe, z0, emb, dtype, bound):
    """Measured (5 steps, 4 seeds): inverted seeds vs fp32, relative L2 0.011–0.016 (bf16) and
    0.0014–0.0020 (fp16); invert-then-sample within the precision, relative 1e-7 to 1.2e-3 (a
    half-precision rounding of the UNet input that flips between the two directions)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low = copy.deepcopy(tiny_pipe).to(dtype=dtype)
    x32, y32 = edict_invert(tiny_pipe, z0, emb, 5)
    x, y = edict_invert(low, z0, emb, 5)
    assert x.dtype == y.dtype == torch.float32 and torch.isfinite(x).all() and torch.isfinite(y).all()
    for got, want in ((x, x32), (y, y32)):
        rel = float((got - want).norm() / want.norm())
        assert rel < bound, rel
    back, _ = edict_sample(low, x, y, emb, 5)
    rt = float((back - z0).norm() / z0.norm())
    assert torch.isfinite(back).all() and rt < 1e-2, rt


def test_p_out_of_range_is_refused_naming_p():
    for bad in (0.0, 0.2, 1.5, -1):
        with pytest.raises(ValueError, match=r"\bp\b"):
            EDICTOptions.from_dict({"p": bad})
        with pytest.raises(ValueError, match=r"edict\.p"):
            InversionConfig.from_dict({"method": "edict", "edict": {"p": bad}})
    with pytest.raises(ValueError, match=r"edict\.p"):
        InversionConfig(method="edict", options=EDICTOptions(p=0.0)).validate()
    assert EDICTOptions.from_dict({"p": 0.5}).p == 0.5 and EDICTOptions.from_dict({"p": 1}).p == 1.0
    assert EDICTOptions().p == 0.93 and EDICTOptions().leapfrog is False


def test_numerics_refuse_a_zero_p(tiny_pipe, z0, emb):
    with pytest.raises(ValueError, match="p must be"):
        edict_invert(tiny_pipe, z0, emb, 2, p=0.0)


def test_registered_with_a_two_part_seed():
    assert "edict" in method_names() and get_method("edict") is EDICTInversion
    cls = EDICTInversion
    assert cls.default_encode == "mean" and cls.seed_parts == ("z_T", "y_T") and "y_T" in cls.seed_note
    assert cls.seed_only_separate(EDICTOptions()) and cls.seed_info()["parts"] == ["z_T", "y_T"]
    assert call_phases(InversionConfig(method="edict", steps=7)) == (7, 7, 7)


def test_generic_api_returns_y_T_and_a_distinct_seed_only_image(tiny_pipe, rand_images):
    cfg = InversionConfig(method="edict", steps=5)
    ticks: list[int] = []
    out = invert_images(tiny_pipe, rand_images, PROMPTS, cfg, progress=lambda d, n: ticks.append(d))
    assert ticks == list(range(1, 16))
    assert set(out.state) == {"y_T"} and out.state["y_T"].shape == out.z_T.shape == out.z_0.shape == (3, 4, 8, 8)
    assert out.state["y_T"].dtype == torch.float32 and not torch.allclose(out.state["y_T"], out.z_T)
    assert set(out.seed_parts()) == {"z_T", "y_T"}
    emb = tiny_pipe.encode_prompts(PROMPTS)
    x_T, y_T = edict_invert(tiny_pipe, out.z_0, emb, 5)
    torch.testing.assert_close(out.z_T, x_T, rtol=0, atol=1e-6 * float(x_T.abs().max()))
    torch.testing.assert_close(out.state["y_T"], y_T, rtol=0, atol=1e-6 * float(y_T.abs().max()))
    # EDICT comes back to float rounding (1.3e-4 at worst on an AMD EPYC host, < 1e-4 on Intel)
    torch.testing.assert_close(out.z_0_hat, out.z_0, rtol=0, atol=3e-4)
    assert out.images_seed_only is not None and out.images_seed_only is not out.images_hat
    assert out.images_seed_only.shape == out.images_hat.shape
    assert float((out.images_seed_only - out.images_hat).abs().max()) > 1e-3
