"""Console test helpers: run directories written directly in the public run-directory format
(docs/run-format.md), deterministic images, an app factory, waiting and reading widgets."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import io

from rich.console import Console

from memtui.config import Config

SEED_SHAPE = (1, 4, 8, 8)  # d = 256


def write_png(path: Path, seed: int, size: int = 32) -> None:
    """A deterministic colourful test image."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize((size, size), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def write_latents(path: Path, seed: int) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"z_0": rng.standard_normal(SEED_SHAPE).astype(np.float32),
               "z_T": rng.standard_normal(SEED_SHAPE).astype(np.float32)}, str(path))


def make_run(root: Path, name: str, spec: dict[str, Any], records: list[dict[str, Any]],
             summary: dict[str, Any] | None = None, finished: bool = True, total: int | None = None,
             images: bool = True) -> Path:
    """A run directory: spec.json, events.jsonl, results.jsonl, latents/, images/, summary.json."""
    run = root / name
    run.mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps(spec, indent=2))
    ts = "2026-01-01T00:00:00.000Z"
    events = [{"ts": ts, "type": "started", "total": total if total is not None else len(records)}]
    with open(run / "results.jsonl", "w") as f:
        for i, rec in enumerate(records):
            if images:
                write_png(run / "images" / f"{rec['item_id']}.query.png", 2 * i)
                write_png(run / "images" / f"{rec['item_id']}.recon.png", 2 * i + 1)
                write_latents(run / "latents" / f"{rec['item_id']}.safetensors", i)
            f.write(json.dumps(rec) + "\n")
            events.append({"ts": ts, "type": "item_done" if rec.get("status") == "ok" else "item_error",
                           "item_id": rec["item_id"]})
    if finished:
        events.append({"ts": ts, "type": "finished"})
    with open(run / "events.jsonl", "w") as f:
        for ev in events:
            f.write(json.dumps(ev) + "\n")
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return run


def concept_records(n_erased: int = 4, n_ref: int = 4, psnr0: float = 20.0, error_at: int | None = None
                    ) -> list[dict[str, Any]]:
    """Deterministic concept-run records: erased-000.. and reference-000.. with PSNR/NLL."""
    out = []
    for set_name, n, off in (("erased", n_erased, 0.0), ("reference", n_ref, 5.0)):
        for i in range(n):
            rec = {"item_id": f"{set_name}-{i:03d}", "set": set_name, "prompt": f"a {set_name} photo {i}",
                   "source": f"/data/{set_name}/{i}.png", "status": "ok",
                   "psnr": psnr0 + off + 0.5 * i, "nll": 355.0 + 4.0 * i + off}
            if error_at is not None and set_name == "erased" and i == error_at:
                rec.update(status="error", error="cannot identify image file", psnr=None, nll=None)
            out.append(rec)
    return out


def concept_summary(records: list[dict[str, Any]], rd: float) -> dict[str, Any]:
    """A summary.json in the documented shape (per-set count/mean/std, EMDs, relative distance)."""
    sets: dict[str, Any] = {}
    for s in ("erased", "reference"):
        ok = [r for r in records if r["set"] == s and r["status"] == "ok"]
        sets[s] = {m: {"count": len(ok), "mean": float(np.mean([r[m] for r in ok])),
                       "std": float(np.std([r[m] for r in ok]))} for m in ("psnr", "nll")}
    return {"analysis": "concept", "sets": sets, "erased_normal": 12.5 * rd, "reference_normal": 12.5,
            "erased_reference": 3.25, "relative_distance": rd,
            "d": 256, "normal": {"mode": "exact", "d": 256, "mean": 363.19, "std": 11.31}}


def make_app(config: Config, **kwargs: Any):
    from memtui.app import MemtuiApp

    kwargs.setdefault("show_eta", False)
    app = MemtuiApp(config=config, config_file=config.path, gpu=False, **kwargs)
    app.animation_level = "none"  # tab underlines jump instead of sliding: stable snapshots
    return app


async def settle(pilot, rounds: int = 2) -> None:
    """Let workers finish and messages be handled (no sleeps as assertions, just waiting)."""
    for _ in range(rounds):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


def plain(widget) -> str:
    """A Static's content rendered to plain text (120 columns)."""
    console = Console(width=120, file=io.StringIO(), record=True, color_system=None)
    console.print(widget.content)
    return console.export_text()


async def wait_until(pilot, cond, limit: int = 100, step: float = 0.1) -> bool:
    """Poll ``cond()`` with ``pilot.pause(step)`` at most ``limit`` times."""
    for _ in range(limit):
        if cond():
            return True
        await pilot.pause(step)
    return cond()
