"""ESD on the tiny test pipeline: the erased prompt's noise prediction moves toward the ESD target
eps_u - eta (eps_c - eps_u) of the frozen model, measured here on fresh latents with a separately
kept copy of the original UNet (independently of esd_erase's own loss)."""
from __future__ import annotations

import copy

import pytest
import torch

from memtui.engine.erasure.esd import esd_erase, esd_param_names
from memtui.engine.testkit import tiny_pipeline


def _distance(pipe, frozen, prompt: str, eta: float) -> float:
    g = torch.Generator().manual_seed(123)
    z = torch.randn(8, 4, 8, 8, generator=g)
    cond, unc = pipe.encode_prompts([prompt] * 8), pipe.encode_prompts([""] * 8)
    total = 0.0
    with torch.no_grad():
        for t in (901, 501, 101):
            eu = frozen(z, t, encoder_hidden_states=unc).sample
            ec = frozen(z, t, encoder_hidden_states=cond).sample
            target = eu - eta * (ec - eu)
            total += float(((pipe.eps(z, t, cond) - target) ** 2).mean())
    return total / 3


def test_esd_moves_prediction_toward_target_and_only_touches_xattn() -> None:
    pipe = tiny_pipeline(seed=3)
    frozen = copy.deepcopy(pipe.unet)
    before_sd = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    d0 = _distance(pipe, frozen, "a red circle", 4.0)
    changed = esd_erase(pipe, "a red circle", steps=12, lr=1e-3, eta=4.0, params="xattn", seed=0,
                        ddim_steps=4)
    d1 = _distance(pipe, frozen, "a red circle", 4.0)
    assert d1 < 0.5 * d0, (d0, d1)
    assert set(changed) == {k for k in before_sd if ".attn2." in k}
    after = pipe.unet.state_dict()
    for k, v in before_sd.items():
        if k in changed:
            assert torch.equal(after[k], changed[k])
        else:
            assert torch.equal(after[k], v), k
    assert any(not torch.equal(before_sd[k], changed[k]) for k in changed)


def test_param_sets() -> None:
    unet = tiny_pipeline(seed=0).unet
    names = [n for n, _ in unet.named_parameters()]
    x, u, f = (esd_param_names(unet, p) for p in ("xattn", "noxattn", "full"))
    assert f == names and not set(x) & set(u)
    assert all(".attn2." in n for n in x) and not any("time_embedding" in n for n in u)
    with pytest.raises(ValueError):
        esd_param_names(unet, "everything")
