"""Generation per family equals diffusers' own pipelines on the same tiny weights: SD 2.x
v-prediction through StableDiffusionPipeline + DDIM(v_prediction), SDXL through
StableDiffusionXLPipeline + Euler (pooled embedding, time ids, zero negative)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from memtui.engine.diffusion.samplers import make_sampler, sample
from memtui.engine.model.schedule import SD14_DDIM_CONFIG
from memtui.engine.testkit import tiny_pipeline

pytestmark = pytest.mark.usefixtures("_one_thread")


def _u8(images: np.ndarray) -> np.ndarray:
    return (images * 255).round().astype(int)


def test_sd2_v_prediction_sampling_equals_diffusers() -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = tiny_pipeline(seed=1, family="sd2")
    sched = DDIMScheduler(**{**SD14_DDIM_CONFIG, "prediction_type": "v_prediction"})  # spelled out, not memtui's
    ref_pipe = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                       unet=pipe.unet, scheduler=sched, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    ref_pipe.set_progress_bar_config(disable=True)
    ref = ref_pipe(["a red circle"], height=32, width=32, num_inference_steps=6, guidance_scale=5.0,
                   generator=torch.Generator().manual_seed(4), output_type="np").images
    ours = sample(pipe, ["a red circle"], [4], 5.0, sampler="ddim", steps=6).astype(int)
    assert np.abs(ours[0] - _u8(ref)[0]).max() <= 1


def test_sdxl_sampling_equals_diffusers() -> None:
    from diffusers import StableDiffusionXLPipeline

    pipe = tiny_pipeline(seed=1, family="sdxl")
    sched = make_sampler("euler", pipe.scheduler_config)
    ref_pipe = StableDiffusionXLPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, text_encoder_2=pipe.text_encoder_2,
                                         tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2, unet=pipe.unet,
                                         scheduler=sched, force_zeros_for_empty_prompt=True)
    ref_pipe.set_progress_bar_config(disable=True)
    ref = ref_pipe(["a blue square"], height=32, width=32, num_inference_steps=6, guidance_scale=5.0,
                   generator=torch.Generator().manual_seed(9), output_type="np").images
    ours = sample(pipe, ["a blue square"], [9], 5.0, sampler="euler", steps=6).astype(int)
    assert np.abs(ours[0] - _u8(ref)[0]).max() <= 1
