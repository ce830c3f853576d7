"""Every inversion method on the same demo items: the concept analysis (erased set = the demo's
circles under its ESD twin, reference set = the other shapes), one run per method, and
``docs/methods.md`` written from the runs' summaries.

    .venv/bin/python benchmarks/compare_methods.py                   # all methods, 16 items per set
    .venv/bin/python benchmarks/compare_methods.py --items 32 --methods ddim renoise
    .venv/bin/python benchmarks/compare_methods.py --no-write        # print the table only

Columns: erased-set PSNR of the method's own reconstruction and of the seed-only one (plain DDIM
from z_T alone, the prompt, no other state), both in dB against the query; NLL (nats, the joint NLL
of the method's seed parts: EDICT's and BDIA's seeds have two latents, so their NLLs sit on a law
with twice the dimension) for the erased and reference sets; relative distance (EMD(erased, N) /
EMD(reference, N) under the law of the seed's own dimension); wall seconds per image (the items'
``seconds``, inversion + reconstructions + decoding, batch ``--batch-size``, this machine); UNet
passes per image (rows through the UNet, a CFG step counting two, counted by wrapping
``SDPipeline.eps``; the VAE is not counted).

Runs land in ``--out`` (default ``runs/compare_methods/<method>``) and are resumable; ``--restart``
starts them over.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "methods.md"


def count_unet_rows() -> dict[str, int]:
    """Wrap ``SDPipeline.eps`` so every call adds its batch rows to the returned counter."""
    from memtui.engine.model.pipeline import SDPipeline

    counter = {"rows": 0}
    original = SDPipeline.eps

    def eps(self: Any, z: Any, t: Any, emb: Any) -> Any:
        counter["rows"] += int(z.shape[0])
        return original(self, z, t, emb)

    SDPipeline.eps = eps  # type: ignore[method-assign]
    return counter


def run_method(method: str, out: Path, items: int, steps: int, batch: int, restart: bool,
               counter: dict[str, int]) -> dict[str, Any]:
    """One concept run of ``method`` on the demo world in ``out``; its summary plus ``unet_rows``."""
    from memtui.engine import analyses
    from memtui.engine.demo.runner import demo_spec_fields
    from memtui.engine.runs.spec import RunSpec

    if restart and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    fields = demo_spec_fields(out)
    spec = RunSpec.from_dict({**fields, "analysis": "concept", "method": method, "steps": steps,
                              "max_items": items, "batch_size": batch, "device": "cpu"})
    before = counter["rows"]
    t0 = time.monotonic()
    summary = analyses.get("concept").run(spec, out)  # the concept analysis alone: no prompt test
    measured = out / "compare_methods.json"
    rows = counter["rows"] - before
    if rows:  # items were computed in this call: keep the count beside the run
        measured.write_text(json.dumps({"unet_rows": rows, "wall_seconds": round(time.monotonic() - t0, 2)}))
    elif measured.is_file():  # an earlier call computed them
        rows = json.loads(measured.read_text()).get("unet_rows", 0)
    summary["unet_rows"] = rows
    summary["wall_seconds"] = round(time.monotonic() - t0, 2)
    return summary


def row(method: str, s: dict[str, Any]) -> dict[str, Any]:
    sets = s.get("sets") or {}

    def stat(set_name: str, key: str, part: str = "mean") -> float | None:
        v = ((sets.get(set_name) or {}).get(key) or {}).get(part)
        return float(v) if isinstance(v, (int, float)) else None

    n = sum(int((sets.get(k) or {}).get("n_ok") or 0) for k in ("erased", "reference"))
    fresh = s.get("unet_rows") or 0
    return {
        "method": method, "parts": " + ".join((s.get("method_seed") or {}).get("parts") or ["z_T"]),
        "d": s.get("d"),
        "psnr": (stat("erased", "psnr"), stat("erased", "psnr", "std")),
        "psnr_seed_only": (stat("erased", "psnr_seed_only"), stat("erased", "psnr_seed_only", "std")),
        "psnr_vae": stat("erased", "psnr_vae"),
        "nll_erased": (stat("erased", "nll"), stat("erased", "nll", "std")),
        "nll_reference": (stat("reference", "nll"), stat("reference", "nll", "std")),
        "rd": s.get("relative_distance"),
        "sec_per_image": ((s.get("timing") or {}).get("item_seconds_total") or 0) / n if n else None,
        "unet_per_image": fresh / n if n and fresh else None,
        "n": n,
    }


def _pm(pair: tuple[float | None, float | None], digits: int) -> str:
    m, sd = pair
    if m is None:
        return "–"
    return f"{m:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{m:.{digits}f}"


def _n(v: Any, fmt: str) -> str:
    return "–" if not isinstance(v, (int, float)) else format(v, fmt)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| method | seed | erased PSNR dB | seed-only PSNR dB | NLL erased (nats) | NLL reference (nats) "
            "| relative distance | s / image | UNet passes / image |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['method']} | {r['parts']} (d = {r['d']}) | {_pm(r['psnr'], 2)} | "
                     f"{_pm(r['psnr_seed_only'], 2)} | {_pm(r['nll_erased'], 1)} | {_pm(r['nll_reference'], 1)} | "
                     f"{_n(r['rd'], '.3f')} | {_n(r['sec_per_image'], '.3f')} | {_n(r['unet_per_image'], '.0f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from memtui.engine.inversion.registry import method_names

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=list(method_names()), choices=list(method_names()))
    ap.add_argument("--items", type=int, default=16, help="items per set (default 16)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "compare_methods")
    ap.add_argument("--restart", action="store_true", help="start every run over")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/methods.md alone")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    counter = count_unet_rows()
    rows, started = [], time.monotonic()
    for m in args.methods:
        print(f"compare_methods: {m} ...", file=sys.stderr, flush=True)
        s = run_method(m, args.out / m, args.items, args.steps, args.batch_size, args.restart, counter)
        rows.append(row(m, s))
        print(f"compare_methods: {m}: {s['wall_seconds']} s, {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    text = table(rows)
    print(text)
    if args.no_write:
        return 0
    import diffusers

    vae = next((r["psnr_vae"] for r in rows if r["psnr_vae"] is not None), None)
    gaps = [f"{r['method']} {r['psnr'][0]:.2f} → {r['psnr_seed_only'][0]:.2f} dB"
            for r in rows if r["psnr"][0] is not None and r["psnr_seed_only"][0] is not None
            and abs(r["psnr"][0] - r["psnr_seed_only"][0]) >= 0.05]
    at_ceiling = [r["method"] for r in rows if vae is not None and r["psnr_seed_only"][0] is not None
                  and r["psnr_seed_only"][0] >= vae - 0.1]
    fresh = all(r["unet_per_image"] is not None for r in rows)
    doc = f"""# Inversion methods compared on the demo world

Written by `benchmarks/compare_methods.py --items {args.items} --steps {args.steps}` on
{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC} ({platform.processor() or platform.machine()},
{os.cpu_count()} cores, torch {torch.__version__}, diffusers {diffusers.__version__}, CPU, fp32, batch
{args.batch_size}; total {time.monotonic() - started:.0f} s). Each method inverts the same
{args.items} erased items (circles, under the demo's ESD twin with "circle" erased) and {args.items}
reference items (the other shapes) with the concept analysis, default options, encoding and
guidance 1.0 (NTI: its own, 7.5 in paper mode). The VAE ceiling of the erased set (decode of the
encoded latent) is {_n(vae, '.2f')} dB.

{text}

- **PSNR** is the method's own reconstruction; **seed-only PSNR** is plain DDIM sampling from `z_T`
  alone with the prompt and no other state (the paper's "likely seed under the model's own
  sampler"). Where the two differ the method carries more than the seed into its reconstruction:
  NTI its per-step null-text embeddings, EDICT its second latent `y_T`, BDIA its second state.
- **NLL** is the joint NLL of the method's seed parts under N(0, I) of dimension `d`; two-part
  seeds (EDICT, BDIA) have twice the dimension, so their NLLs are compared with the law of `2·256`
  values, not with the one-part methods' numbers. The relative distance uses each run's own law.
- **Own vs seed-only** on this run: {'; '.join(gaps) or 'no method differs by 0.05 dB or more'}. Seed-only
  reconstructions at the VAE ceiling (within 0.1 dB): {', '.join(at_ceiling) or 'none'}.
- **s / image** is the items' compute time on this 2-core CPU machine (compare within the column,
  not with other machines); **UNet passes / image** counts rows through the
  UNet, a CFG step counting two, and includes the seed-only reconstruction where it is separate.{'' if fresh else '''
  A "–" means the run was resumed from an earlier one, so its UNet passes were not counted: rerun with `--restart`.'''}
"""
    DOC.write_text(doc, encoding="utf-8")
    print(f"compare_methods: wrote {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
