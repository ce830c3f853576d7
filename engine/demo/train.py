"""Train the demo world's models from a seed, stage by stage (each stage checkpointed on disk):

1. ``vae``        AutoencoderKL (4 latent channels, 32x32 -> 4x8x8), scaling factor = 1/std of latents
2. ``classifier`` the shape classifier, trained on clean images and VAE reconstructions
3. ``unet``       UNet2DConditionModel + CLIPTextModel trained jointly (10% prompt dropout, EMA
                  weights), tracking the per-prompt detection rate; writes the pipeline folder
4. ``esd``        ESD-x erasure of the demo concept -> a partial UNet safetensors

    python -m memtui.engine.demo.train --out DIR --seed 0 [--stage all|vae|classifier|unet|esd]

The defaults are the shipped world's configuration (``engine/demo/weights/demo.json``): seed 0 with
no other flags retrains it (about 35 min on 2 CPU cores; the VAE stage is 26 of them).

Outputs under DIR/ship/ (the layout of ``engine/demo/weights``): ``base/`` (diffusers pipeline
folder), ``erased_<concept>.safetensors``, ``classifier.safetensors`` + ``classifier.json``,
``demo.json``; per-stage logs in DIR/log_<stage>.json. A finished stage is skipped on restart.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from memtui.engine.core.tensors import uint8_to_tensor
from memtui.engine.demo.world import SHAPES, WORDS, generate
from memtui.engine.detectors.demo import DemoDetector, ShapeNet, save as save_classifier
from memtui.engine.diffusion.ddim import generate_images
from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.loading import save_pipeline
from memtui.engine.model.schedule import SD14_DDIM_CONFIG, make_ddim
from memtui.engine.model.tokenizer import build_word_tokenizer

STAGES = ("vae", "classifier", "unet", "esd")
DEFAULTS: dict[str, Any] = {
    "n_train": 24000, "vae_steps": 4000, "vae_batch": 32, "vae_lr": 1e-3, "kl_weight": 1e-6,
    "cls_steps": 400, "cls_batch": 128, "n_cls": 6000, "cls_width": 16,
    "unet_steps": 2500, "unet_batch": 64, "unet_lr": 1e-3, "dropout": 0.1, "ema": 0.999,
    "eval_every": 500, "eval_n": 32, "eval_steps": 20, "guidance": 4.0,
    "concept": "circle", "esd_steps": 70, "esd_lr": 5e-4, "esd_eta": 1.0, "esd_params": "xattn",
    "esd_ddim_steps": 50, "final_eval_n": 64, "context": 8, "latent_channels": 4,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of tensors in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def cosine_lr(step: int, total: int, warmup: int = 100, floor: float = 0.1) -> float:
    if step < warmup:
        return (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))


# ---------------------------------------------------------------------------------------- models
def make_vae(latent_channels: int = 4) -> AutoencoderKL:
    """The demo VAE: 32x32 RGB -> ``latent_channels`` x 8 x 8 (the shipped world: 4)."""
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8,
                         sample_size=32, scaling_factor=1.0)


def make_unet_and_text(context: int, latent_channels: int = 4) -> tuple[UNet2DConditionModel, CLIPTextModel, Any]:
    tok = build_word_tokenizer(WORDS, max_length=context)
    vocab = tok.get_vocab()
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=context,
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"]))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=latent_channels, out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=16,
        cross_attention_dim=64, attention_head_dim=8)
    return unet, te, tok


# ---------------------------------------------------------------------------------------- stages
def stage_vae(out: Path, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(seed)
    imgs, _, _ = generate(cfg["n_train"], seed)
    x_all = uint8_to_tensor(imgs)
    vae = make_vae(cfg.get("latent_channels", 4)).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg["vae_lr"], weight_decay=0.0)
    rng = np.random.default_rng(seed + 11)
    t0, ema_loss, n = time.time(), None, cfg["vae_steps"]
    for step in range(n):
        for g in opt.param_groups:
            g["lr"] = cfg["vae_lr"] * cosine_lr(step, n)
        x = x_all[rng.integers(len(x_all), size=cfg["vae_batch"])]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = F.mse_loss(rec, x) + cfg["kl_weight"] * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if step % 100 == 0 or step == n - 1:
            log(f"vae step {step}/{n} loss {ema_loss:.5f} ({time.time() - t0:.0f}s)")
    vae.eval().requires_grad_(False)
    val, _, _ = generate(512, seed + 1000)
    xv = uint8_to_tensor(val)
    with torch.no_grad():
        lat = torch.cat([vae.encode(b).latent_dist.mean for b in x_all[:4096].split(512)])
        recv = vae.decode(vae.encode(xv).latent_dist.mean).sample
    sf = float(1.0 / lat.std())
    vae.register_to_config(scaling_factor=sf)
    vae.save_pretrained(out / "stage_vae")
    info = {"vae_seconds": round(time.time() - t0, 1), "vae_psnr_db": float(psnr(recv, xv).mean()),
            "scaling_factor": sf, "vae_final_loss": ema_loss}
    log(f"vae done: {info}")
    return info


def _recon(vae: AutoencoderKL, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([vae.decode(vae.encode(b).latent_dist.mean).sample.clamp(-1, 1) for b in x.split(512)])


def stage_classifier(out: Path, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL.from_pretrained(out / "stage_vae").eval().requires_grad_(False)
    t0 = time.time()
    imgs, labels, _ = generate(cfg["n_cls"], seed + 1)
    x = uint8_to_tensor(imgs)
    x = torch.cat([x, _recon(vae, x)])
    y = torch.tensor([SHAPES.index(s) for s in labels] * 2)
    model = ShapeNet(len(SHAPES), cfg["cls_width"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed + 12)
    n = cfg["cls_steps"]
    for step in range(n):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * cosine_lr(step, n, warmup=50)
        idx = torch.from_numpy(rng.integers(len(x), size=cfg["cls_batch"]))
        xb = x[idx] + 0.05 * torch.randn(len(idx), 3, 32, 32) * torch.rand(len(idx), 1, 1, 1)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log(f"classifier step {step}/{n} loss {loss.item():.4f}")
    det = DemoDetector(model, SHAPES)
    vi, vl, _ = generate(1000, seed + 2000)
    xv = uint8_to_tensor(vi)
    yv = torch.tensor([SHAPES.index(s) for s in vl])
    acc_clean = float((det.scores_tensor(xv).argmax(1) == yv).float().mean())
    acc_rec = float((det.scores_tensor(_recon(vae, xv)).argmax(1) == yv).float().mean())
    save_classifier(model, SHAPES, out / "ship", val_acc_clean=acc_clean, val_acc_recon=acc_rec)
    info = {"classifier_seconds": round(time.time() - t0, 1), "classifier_acc_clean": acc_clean,
            "classifier_acc_recon": acc_rec}
    log(f"classifier done: {info}")
    return info


def prompt_rates(pipe: SDPipeline, det: DemoDetector, n: int, steps: int, guidance: float,
                 seed: int) -> dict[str, dict[str, float]]:
    """For each shape prompt "a <shape>": fraction of ``n`` samples classified as each shape."""
    rates = {}
    for s in SHAPES:
        x = generate_images(pipe, f"a {s}", n, seed, steps, guidance)
        p = det.scores_tensor(x)
        rates[s] = {c: float((p[:, i] >= det.threshold).float().mean()) for i, c in enumerate(SHAPES)}
    return rates


def stage_unet(out: Path, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    from memtui.engine import detectors  # noqa: F401  (registry import check)
    from memtui.engine.detectors.demo import load as load_det

    torch.manual_seed(seed + 2)
    vae = AutoencoderKL.from_pretrained(out / "stage_vae").eval().requires_grad_(False)
    det = load_det(out / "ship")
    t0 = time.time()
    imgs, _, caps = generate(cfg["n_train"], seed + 3)
    x = uint8_to_tensor(imgs)
    sf = float(vae.config.scaling_factor)
    with torch.no_grad():
        lat = torch.cat([vae.encode(b).latent_dist.mean for b in x.split(512)]) * sf
    log(f"unet: encoded {len(lat)} latents (std {lat.std():.3f}) in {time.time() - t0:.0f}s")
    unet, te, tok = make_unet_and_text(cfg["context"], cfg.get("latent_channels", 4))
    uniq = sorted(set(caps)) + [""]
    ids_of = tok(uniq, padding="max_length", truncation=True, max_length=cfg["context"], return_tensors="pt").input_ids
    cap_idx = torch.tensor([uniq.index(c) for c in caps])
    empty = len(uniq) - 1
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["unet_lr"], weight_decay=0.01)
    ema_unet, ema_te = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(te).requires_grad_(False)
    ac = torch.tensor(make_ac())
    rng = np.random.default_rng(seed + 13)
    n, history, ema_loss = cfg["unet_steps"], [], None
    unet.train(), te.train()
    t_start = time.time()
    for step in range(n):
        for g in opt.param_groups:
            g["lr"] = cfg["unet_lr"] * cosine_lr(step, n, warmup=200)
        idx = torch.from_numpy(rng.integers(len(lat), size=cfg["unet_batch"]))
        ci = cap_idx[idx].clone()
        ci[torch.rand(len(ci)) < cfg["dropout"]] = empty
        emb = te(ids_of[ci])[0]
        z0 = lat[idx]
        noise = torch.randn_like(z0)
        t = torch.randint(0, 1000, (len(z0),))
        a = ac[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        loss = F.mse_loss(unet(zt, t, encoder_hidden_states=emb).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(cfg["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for m_ema, m in ((ema_unet, unet), (ema_te, te)):
                for pe, p in zip(m_ema.parameters(), m.parameters()):
                    pe.lerp_(p, 1 - d)
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        if step % 100 == 0:
            log(f"unet step {step}/{n} loss {ema_loss:.4f} ({(time.time() - t_start) / (step + 1):.2f}s/step)")
        if (step + 1) % cfg["eval_every"] == 0 or step == n - 1:
            pipe = _pipe(ema_unet, vae, ema_te, tok)
            r = prompt_rates(pipe, det, cfg["eval_n"], cfg["eval_steps"], cfg["guidance"], seed + 77)
            own = {s: r[s][s] for s in SHAPES}
            history.append({"step": step + 1, "loss": ema_loss, "rates": own})
            log(f"unet eval step {step + 1}: {own}")
            ema_unet.requires_grad_(False), ema_te.requires_grad_(False)
    pipe = _pipe(ema_unet, vae, ema_te, tok)
    save_pipeline(pipe, out / "ship" / "base")
    info = {"unet_seconds": round(time.time() - t0, 1),
            "unet_s_per_step": round((time.time() - t_start) / n, 3), "unet_final_loss": ema_loss,
            "unet_params": sum(p.numel() for p in unet.parameters()),
            "text_params": sum(p.numel() for p in te.parameters()), "history": history}
    log(f"unet done: {({k: v for k, v in info.items() if k != 'history'})}")
    return info


def make_ac() -> np.ndarray:
    """SD 1.4's ``alphas_cumprod`` ``[1000]`` float32 (the training noise schedule)."""
    return make_ddim(SD14_DDIM_CONFIG).alphas_cumprod.float().numpy()


def _pipe(unet: UNet2DConditionModel, vae: AutoencoderKL, te: CLIPTextModel, tok: Any) -> SDPipeline:
    return SDPipeline(unet=unet, vae=vae, text_encoder=te, tokenizer=tok,
                      scheduler_config=dict(SD14_DDIM_CONFIG), source="demo").eval()


def load_stage_pipeline(folder: Path) -> SDPipeline:
    """The trained base pipeline from a pipeline folder (without the project loader)."""
    from transformers import CLIPTokenizer

    return SDPipeline(unet=UNet2DConditionModel.from_pretrained(folder / "unet"),
                      vae=AutoencoderKL.from_pretrained(folder / "vae"),
                      text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
                      tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
                      scheduler_config=dict(SD14_DDIM_CONFIG), source=str(folder)).eval()


def stage_esd(out: Path, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    from safetensors.torch import save_file

    from memtui.engine.detectors.demo import load as load_det
    from memtui.engine.erasure.esd import esd_erase

    t0 = time.time()
    pipe = load_stage_pipeline(out / "ship" / "base")
    det = load_det(out / "ship")
    concept = cfg["concept"]
    changed = esd_erase(pipe, f"a {concept}", steps=cfg["esd_steps"], lr=cfg["esd_lr"], eta=cfg["esd_eta"],
                        params=cfg["esd_params"], seed=seed + 4, ddim_steps=cfg["esd_ddim_steps"],
                        progress=lambda i, n, loss: log(f"esd step {i}/{n} loss {loss:.5f}") if i % 10 == 0 else None)
    save_file({k: v.contiguous() for k, v in changed.items()}, str(out / "ship" / f"erased_{concept}.safetensors"),
              metadata={"method": "esd", "concept": concept, "params": cfg["esd_params"]})
    esd_s = time.time() - t0
    base = load_stage_pipeline(out / "ship" / "base")
    rb = prompt_rates(base, det, cfg["final_eval_n"], 50, cfg["guidance"], seed + 99)
    re_ = prompt_rates(pipe, det, cfg["final_eval_n"], 50, cfg["guidance"], seed + 99)
    info = {"esd_seconds": round(esd_s, 1), "esd_tensors": len(changed),
            "esd_params": int(sum(v.numel() for v in changed.values())),
            "rates_base": {s: rb[s][s] for s in SHAPES}, "rates_erased": {s: re_[s][s] for s in SHAPES}}
    log(f"esd done: {info}")
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage", default="all", choices=("all",) + STAGES)
    ap.add_argument("--force", action="store_true", help="rerun stages already done")
    ap.add_argument("--threads", type=int, default=2)
    for k, v in DEFAULTS.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = {k: getattr(args, k) for k in DEFAULTS}
    out: Path = args.out
    (out / "ship").mkdir(parents=True, exist_ok=True)
    fns = {"vae": stage_vae, "classifier": stage_classifier, "unet": stage_unet, "esd": stage_esd}
    for st in STAGES if args.stage == "all" else (args.stage,):
        done = out / f"log_{st}.json"
        if done.exists() and not args.force:
            log(f"stage {st} already done ({done}); skipping")
            continue
        info = fns[st](out, args.seed, cfg)
        done.write_text(json.dumps({"seed": args.seed, "config": cfg, **info}, indent=2))
    logs = {st: json.loads((out / f"log_{st}.json").read_text()) for st in STAGES if (out / f"log_{st}.json").exists()}
    summary = {"seed": args.seed, "concept": cfg["concept"], "config": cfg,
               **{k: v for lg in logs.values() for k, v in lg.items() if k not in ("seed", "config")}}
    (out / "ship" / "demo.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
