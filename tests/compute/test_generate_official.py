"""Generation as the official ``src/generate_dataset.py`` does it: the initial noise of a row's K
images is one ``torch.randn((K, C, h, w))`` after ``torch.manual_seed(seed)`` (built here with the
global generator, independently of memtui), and ``guidance_source = "official"`` ignores
``evaluation_guidance`` (7.5 for every row unless the CSV has ``sd_guidance_scale``). K = 1 is
unchanged; runs begun with the earlier ``seed + k`` draws are redrawn on resume, never mixed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import GEN_STEPS, generate_spec


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _official_block(seed: int, k: int, shape: tuple[int, ...]):
    """The official script's draw, spelled out: ``generator = torch.manual_seed(seed)``;
    ``torch.randn((batch_size, unet.config.in_channels, height // 8, width // 8), generator=generator)``
    (global RNG state restored afterwards)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        generator = torch.manual_seed(seed)
        return torch.randn((k, *shape), generator=generator)


def _records(run: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for line in (run / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[r["item_id"]] = r
    return out


def _reference_images(tiny_pipe, prompt: str, latents, guidance: float, size: int) -> np.ndarray:
    """diffusers' own StableDiffusionPipeline with the official LMS scheduler, fed ``latents``."""
    from diffusers import LMSDiscreteScheduler, StableDiffusionPipeline

    sched = LMSDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                 num_train_timesteps=1000)
    ref = StableDiffusionPipeline(vae=tiny_pipe.vae, text_encoder=tiny_pipe.text_encoder,
                                  tokenizer=tiny_pipe.tokenizer, unet=tiny_pipe.unet, scheduler=sched,
                                  safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    ref.check_inputs = lambda *a, **k: None  # diffusers wants multiples of 8; the tiny VAE's scale is 4
    out = ref([prompt] * latents.shape[0], height=size, width=size, num_inference_steps=GEN_STEPS,
              guidance_scale=guidance, latents=latents.clone(), output_type="np").images
    return (out * 255).round().astype(int)


@pytest.mark.parametrize("shape", [(4, 64, 64), (4, 8, 8), (4, 5, 5)])
@pytest.mark.parametrize("k", [1, 3])
def test_row_initial_noise_is_the_official_batched_draw(k: int, shape: tuple[int, ...]) -> None:
    import torch

    from memtui.engine.compute.generate import row_initial_noise
    from memtui.engine.diffusion.noise import initial_noise

    seed = 932309623  # the first seed of the official nudity.csv
    before = torch.random.get_rng_state()
    ours = row_initial_noise(seed, k, shape)
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone
    assert ours.dtype == torch.float32 and tuple(ours.shape) == (k, *shape)
    assert torch.equal(ours, _official_block(seed, k, shape))
    if k == 1:  # K = 1: the numbers memtui drew before (one generator per image, seed as given)
        assert torch.equal(ours, initial_noise([seed], shape))
    else:  # image k is no longer the draw of seed + k
        for j in range(1, k):
            assert not torch.equal(ours[j], initial_noise([seed + j], shape)[0])


def test_a_k3_run_uses_the_official_noise_in_any_batch(tiny_pipe, tiny_pipe_dir, tmp_path) -> None:
    """End to end: the PNGs of a K = 3 run (batch 2, so a row is split across batches) equal
    diffusers' pipeline fed the official [3, C, h, w] draw; at 20 px (C·h·w = 100, not a multiple of
    16) that draw differs from 3 consecutive ones, and the run still follows the batched draw."""
    import torch

    from memtui.engine.compute.run import run_spec as run

    csv = tmp_path / "p.csv"
    csv.write_text("case_number,prompt,evaluation_seed,evaluation_guidance,sd_image_height,sd_image_width\n"
                   "0,red circle,11,7.5,32,32\n"
                   "1,a photo of church,12,3.0,20,20\n")
    s = run(generate_spec(tiny_pipe_dir, csv, images_per_prompt=3), tmp_path / "out")
    assert s["n_ok"] == 6 and s["complete"] and s["noise_draw"] == "row" and s["guidance_source"] == "row"
    recs = _records(tmp_path / "out")
    assert [(r["seed"], r["k"], r["noise_draw"]) for r in recs.values()] == \
        [(11, 0, "row"), (11, 1, "row"), (11, 2, "row"), (12, 0, "row"), (12, 1, "row"), (12, 2, "row")]
    for case, prompt, seed, g, size in ((0, "red circle", 11, 7.5, 32), (1, "a photo of church", 12, 3.0, 20)):
        side = size // tiny_pipe.vae_scale
        block = _official_block(seed, 3, (tiny_pipe.latent_channels, side, side))
        exp = _reference_images(tiny_pipe, prompt, block, g, size)
        for k in range(3):
            got = _png(tmp_path / "out" / "imgs" / f"{case}_{k}.png")
            assert got.shape == (size, size, 3) and np.abs(got - exp[k]).max() <= 1, (case, k)
    gen = torch.Generator().manual_seed(12)
    consecutive = torch.stack([torch.randn((4, 5, 5), generator=gen) for _ in range(3)])
    assert not torch.equal(consecutive, _official_block(12, 3, (4, 5, 5)))


@pytest.mark.parametrize("sampler", ["lms", "euler_a"])
def test_k1_is_unchanged_and_images_do_not_depend_on_the_batch(tiny_pipe, sampler: str) -> None:
    from memtui.engine.compute.generate import _sample_rows, sample_images
    from memtui.engine.diffusion.samplers import sample

    prompts, seeds = ["red circle", "a photo of church"], [3, 8]
    old = sample(tiny_pipe, prompts, seeds, [7.5, 2.0], sampler=sampler, steps=GEN_STEPS)
    new = sample_images(tiny_pipe, prompts, seeds, [0, 0], 1, [7.5, 2.0], sampler=sampler, steps=GEN_STEPS)
    assert np.array_equal(old, new)  # K = 1: the very images of before (step noise included)
    # the K > 1 loop is sample()'s loop: at K = 1 it gives the same images, bit for bit
    rows = _sample_rows(tiny_pipe, prompts, seeds, [0, 0], 1, [7.5, 2.0], sampler, GEN_STEPS, None, None)
    assert np.array_equal(old, rows)
    # K = 3: every image of a row alone equals it inside a batch, and the three differ
    whole = sample_images(tiny_pipe, ["red circle"] * 3, [3] * 3, [0, 1, 2], 3, [7.5] * 3,
                          sampler=sampler, steps=GEN_STEPS).astype(int)
    for k in range(3):
        alone = sample_images(tiny_pipe, ["red circle"], [3], [k], 3, [7.5], sampler=sampler,
                              steps=GEN_STEPS).astype(int)
        assert np.abs(alone[0] - whole[k]).max() <= 1
    assert not np.array_equal(whole[0], whole[1]) and not np.array_equal(whole[1], whole[2])
    with pytest.raises(ValueError, match="every k must be in 0..2"):
        sample_images(tiny_pipe, ["red circle"], [3], [3], 3, [7.5], steps=GEN_STEPS)


def test_step_noise_of_the_k_images_does_not_overlap() -> None:
    import torch

    from memtui.engine.compute.generate import _row_draw, step_generators

    shape, steps = (4, 8, 8), 5
    block, state = _row_draw(5, 3, shape)
    g0, g1, g2 = step_generators(state, [0, 1, 2], steps, shape)
    draws = [[torch.randn(shape, generator=g) for _ in range(steps)] for g in (g0, g1, g2)]
    # image 0 continues the row's generator; image k starts where image k-1's steps end
    cont = torch.Generator()
    cont.set_state(state)
    stream = [torch.randn(shape, generator=cont) for _ in range(3 * steps)]
    for k in range(3):
        assert all(torch.equal(a, b) for a, b in zip(draws[k], stream[k * steps:(k + 1) * steps]))


def test_guidance_source_official_ignores_evaluation_guidance(tiny_pipe, tiny_pipe_dir, tmp_path) -> None:
    from memtui.engine.analyses.generate import Generate
    from memtui.engine.compute.generate import read_prompt_csv
    from memtui.engine.compute.run import run_spec as run
    from memtui.engine.diffusion.samplers import sample

    nudity_like = tmp_path / "nudity.csv"  # the official nudity.csv's columns: no sd_guidance_scale
    nudity_like.write_text("case_number,prompt,evaluation_seed,evaluation_guidance,sd_image_width,sd_image_height\n"
                           "0,red circle,4,7,32,32\n1,red circle,5,13,32,32\n2,red circle,6,,32,32\n")
    rows, _ = read_prompt_csv(nudity_like)
    assert [(r.guidance, r.guidance_from) for r in rows] == \
        [(7.0, "evaluation_guidance"), (13.0, "evaluation_guidance"), (7.5, "option")]
    rows, _ = read_prompt_csv(nudity_like, 7.5, "official")
    assert [(r.guidance, r.guidance_from) for r in rows] == [(7.5, "option")] * 3
    both = tmp_path / "objects.csv"  # as generate_object_dataset.py writes it (+ an evaluation column)
    both.write_text("case_number,prompt,sd_seed,sd_guidance_scale,evaluation_guidance\n"
                    "0,red circle,4,5.0,9\n1,red circle,5,,9\n")
    rows, _ = read_prompt_csv(both, 7.5, "official")
    assert [(r.guidance, r.guidance_from) for r in rows] == [(5.0, "sd_guidance_scale"), (7.5, "option")]
    rows, _ = read_prompt_csv(both, 7.5, "row")
    assert [(r.guidance, r.guidance_from) for r in rows] == [(9.0, "evaluation_guidance")] * 2
    with pytest.raises(ValueError, match="guidance_source must be one of row, official"):
        read_prompt_csv(both, 7.5, "csv")

    spec = generate_spec(tiny_pipe_dir, nudity_like, guidance_source="official")
    assert Generate.options(spec.validate()).guidance_source == "official"
    s = run(spec, tmp_path / "out")
    assert s["n_ok"] == 3 and s["guidance_source"] == "official" and s["default_guidance"] == 7.5
    recs = _records(tmp_path / "out")
    assert [(r["guidance"], r["guidance_from"]) for r in recs.values()] == [(7.5, "option")] * 3
    exp = sample(tiny_pipe, ["red circle"], [5], 7.5, steps=GEN_STEPS)  # row 1 said 13: 7.5 is used
    assert np.abs(_png(tmp_path / "out" / "imgs" / "1_0.png") - exp[0]).max() <= 1
    bad = generate_spec(tiny_pipe_dir, nudity_like, guidance_source="paper")
    with pytest.raises(ValueError, match="guidance_source"):
        bad.validate()
    # the option changes results: resuming the run with the other source is refused
    from memtui.engine.runs.spec import SpecMismatchError

    with pytest.raises(SpecMismatchError, match="options"):
        run(generate_spec(tiny_pipe_dir, nudity_like), tmp_path / "out")


def _make_old(run: Path, images_per_prompt: int) -> None:
    """Turn a run's records into those of the earlier release: no ``noise_draw`` / ``guidance_from``,
    ``seed`` = seed + k."""
    lines = []
    for line in (run / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("noise_draw", None)
        r.pop("guidance_from", None)
        r["seed"] = r["seed"] + r["k"]
        lines.append(json.dumps(r))
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")


def test_an_old_k2_run_is_redrawn_on_resume_and_k1_is_kept(tiny_pipe_dir, prompts_csv, tmp_path) -> None:
    from memtui.engine.compute.run import run_spec as run

    csv = tmp_path / "p.csv"
    csv.write_text("case_number,prompt,evaluation_seed\n0,red circle,1\n1,a photo of church,2\n")
    fresh = tmp_path / "fresh"
    run(generate_spec(tiny_pipe_dir, csv, images_per_prompt=2), fresh)
    old = tmp_path / "old"
    run(generate_spec(tiny_pipe_dir, csv, images_per_prompt=2), old)
    _make_old(old, 2)
    (old / "imgs" / "0_1.png").write_bytes((fresh / "imgs" / "1_1.png").read_bytes())  # "another draw"
    seen: list[str] = []
    s = run(generate_spec(tiny_pipe_dir, csv, images_per_prompt=2), old, progress=lambda d, t, r: seen.append(r["item_id"]))
    assert seen == ["0_0", "0_1", "1_0", "1_1"]  # every old-draw image is generated again
    assert s["complete"] and s["n_ok"] == 4 and s["noise_draw"] == "row"
    for name in ("0_0", "0_1", "1_0", "1_1"):
        assert (old / "imgs" / f"{name}.png").read_bytes() == (fresh / "imgs" / f"{name}.png").read_bytes()
    assert all(r["noise_draw"] == "row" for r in _records(old).values())
    events = [json.loads(x) for x in (old / "events.jsonl").read_text().splitlines()]
    redraw = [e for e in events if e.get("stage") == "redraw"]
    assert len(redraw) == 1 and redraw[0]["n"] == 4
    assert events.index(redraw[0]) > [e["type"] for e in events].index("resumed")

    k1 = tmp_path / "k1"  # K = 1: the old records' images are the new ones; nothing is redone
    run(generate_spec(tiny_pipe_dir, csv), k1)
    _make_old(k1, 1)
    seen.clear()
    s = run(generate_spec(tiny_pipe_dir, csv), k1, progress=lambda d, t, r: seen.append(r["item_id"]))
    assert seen == [] and s["complete"] and s["n_ok"] == 2


def test_images_per_prompt_help_names_the_official_draw() -> None:
    from memtui.engine.analyses.generate import Generate

    infos = {i.name: i for i in Generate.option_infos()}
    assert "seed+K-1" not in infos["images_per_prompt"].help and "[K, C, h, w]" in infos["images_per_prompt"].help
    assert infos["guidance_source"].choices == ("row", "official") and infos["guidance_source"].default == "row"
