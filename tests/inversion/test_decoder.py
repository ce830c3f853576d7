"""Decoder inversion: batched == separate runs, loss decreases, loss matches an independent MSE,
regularisers have their optimum at the encoder mean, frozen VAE, cancel."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from memtui.engine.inversion.decoder import (DecoderInversionCancelled, decoder_invert,
                                             encoder_mean)


@pytest.fixture(scope="module")
def batched(tiny_pipe, rand_images):
    init = encoder_mean(tiny_pipe, rand_images[[1, 2, 0]])  # start from *other* images' latents
    return init, decoder_invert(tiny_pipe, rand_images, init, steps=12)


def test_batched_equals_separate_runs(tiny_pipe, rand_images, batched) -> None:
    init, res = batched
    for i in range(3):
        one = decoder_invert(tiny_pipe, rand_images[i:i + 1], init[i:i + 1], steps=12)
        moved = (res.z[i] - init[i]).abs().max().item()
        assert moved > 1e-2
        torch.testing.assert_close(one.z[0], res.z[i], atol=2e-5, rtol=0)
        np.testing.assert_allclose(one.history[:, 0], res.history[:, i], rtol=1e-5)
        np.testing.assert_allclose(one.psnr[0], res.psnr[i], atol=1e-3)  # a uint8 level may flip
    chunked = decoder_invert(tiny_pipe, rand_images, init, steps=12, chunk_size=2)
    torch.testing.assert_close(chunked.z, res.z, atol=2e-5, rtol=0)


def test_loss_decreases_and_matches_independent_mse(tiny_pipe, rand_images, batched) -> None:
    init, res = batched
    with torch.no_grad():
        dec0 = tiny_pipe.vae.decode(init).sample.numpy()
        dec1 = tiny_pipe.vae.decode(res.z).sample.numpy()
    tgt = rand_images.numpy() / 2 + 0.5
    mse0 = ((dec0 / 2 + 0.5 - tgt) ** 2).reshape(3, -1).mean(1)
    mse1 = ((dec1 / 2 + 0.5 - tgt) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(res.history[0], mse0, rtol=1e-5)
    np.testing.assert_allclose(res.losses, mse1, rtol=1e-5)
    assert (res.losses < 0.9 * res.history[0]).all()
    assert res.history.shape == (12, 3)
    # decoder-only PSNR: uint8 (clamp, round) of D(z) vs target, as a hand computation
    q = lambda x: np.round(np.clip(x / 2 + 0.5, 0, 1).astype(np.float32) * 255).astype(np.float64) / 255  # noqa: E731
    mse_q = ((q(dec1) - q(rand_images.numpy())) ** 2).reshape(3, -1).mean(1)
    np.testing.assert_allclose(res.psnr, 10 * np.log10(1 / mse_q), atol=1e-6)


def test_vae_frozen_and_regularisers_vanish_at_encoder_mean(tiny_pipe, rand_images) -> None:
    before = [p.detach().clone() for p in tiny_pipe.vae.parameters()]
    mu = encoder_mean(tiny_pipe, rand_images)
    for w in ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)):
        res = decoder_invert(tiny_pipe, rand_images, mu, steps=3, loss_weights=w)
        torch.testing.assert_close(res.z, mu, atol=1e-6, rtol=0)  # zero gradient at the optimum
    res = decoder_invert(tiny_pipe, rand_images, mu + 0.5, steps=5, loss_weights=(0.0, 1.0, 0.0))
    np.testing.assert_allclose(res.history[0], 0.25, rtol=1e-5)
    assert (res.losses < res.history[0]).all()
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_pipe.vae.parameters()))
    assert not any(p.requires_grad for p in tiny_pipe.vae.parameters())


def test_cancel_and_progress(tiny_pipe, rand_images) -> None:
    ev = threading.Event()
    seen: list[int] = []

    def prog(step: int, steps: int, loss: float) -> None:
        seen.append(step)
        if step >= 4:
            ev.set()

    with pytest.raises(DecoderInversionCancelled):
        decoder_invert(tiny_pipe, rand_images[:1], encoder_mean(tiny_pipe, rand_images[:1]),
                       steps=50, progress=prog, cancel=ev, progress_every=2)
    assert seen == [2, 4]
