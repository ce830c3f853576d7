"""What the SIB settings can do for the sphere on a demo world: one ``memories`` run per setting
(the demo's erased twin, its circles as targets, its other shapes as supports), and a table of the
sphere CV (std/mean of the memory -> target-seed distances, mean ± std over targets), the mean
pairwise cosine distance between memories, memory PSNR (own and seed-only) and NLL, written into
``docs/sphere.md`` between markers named by ``--label``.

    .venv/bin/python benchmarks/sphere_sweep.py                              # the shipped world
    .venv/bin/python benchmarks/sphere_sweep.py --label latent8 \\
        --base /work/variants/latent8/ship/base --ablated /work/variants/latent8/ship/erased_circle.safetensors
    .venv/bin/python benchmarks/sphere_sweep.py --only base supports10       # some settings

Runs land in ``runs/sphere/<label>/<setting>`` and are resumable. The paper's target: CV 2% ± 1%
(SD 1.4, 10 memories per target, 3000 decoder steps); issue 14's bar: CV < 5% with >= 10 memories,
memory PSNR >= 20 dB, pairwise cosine distance > 0.2.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "sphere.md"

# Every setting states all the SIB options it uses (the demo world's defaults may change; a stored
# run keeps its own): BASE, then the setting's changes.
BASE: dict[str, Any] = {"num_supports": 5, "vae_steps": 150, "vae_lr": 0.1, "sib_path": "reencode"}

# name -> (what it changes, spec fields, memories options over BASE)
SETTINGS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "base": ("5 supports, 150 decoder steps at lr 0.1, reencode, DDIM", {}, {}),
    "supports10": ("10 supports per target", {}, {"num_supports": 10}),
    "direct": ("direct path (decoder latent straight into inversion)", {}, {"sib_path": "direct"}),
    "steps600": ("600 decoder steps", {}, {"vae_steps": 600}),
    "steps600_lr003": ("600 decoder steps at lr 0.03", {}, {"vae_steps": 600, "vae_lr": 0.03}),
    "supports10_direct": ("10 supports, direct", {}, {"num_supports": 10, "sib_path": "direct"}),
    "direct_steps600": ("direct, 600 decoder steps", {}, {"sib_path": "direct", "vae_steps": 600}),
    "supports10_direct_steps600": ("10 supports, direct, 600 decoder steps", {},
                                   {"num_supports": 10, "sib_path": "direct", "vae_steps": 600}),
    "supports10_direct_renoise": ("10 supports, direct, ReNoise", {"method": "renoise"},
                                  {"num_supports": 10, "sib_path": "direct"}),
    "fpi": ("fixed-point inversion", {"method": "fpi"}, {}),
    "renoise": ("ReNoise (the paper's method)", {"method": "renoise"}, {}),
}


def run_setting(label: str, name: str, base: str | None, ablated: str | None, targets: int) -> dict[str, Any]:
    from memtui.engine import analyses
    from memtui.engine.demo.runner import demo_spec_fields
    from memtui.engine.runs.spec import RunSpec, SpecMismatchError

    _, fields, opts = SETTINGS[name]
    out = ROOT / "runs" / "sphere" / label / name
    out.mkdir(parents=True, exist_ok=True)
    spec_fields = demo_spec_fields(out)
    if base:
        spec_fields["base"] = base
    if ablated:
        spec_fields["ablated"] = ablated
    spec = RunSpec.from_dict({**spec_fields, "analysis": "memories", "method": "ddim", "steps": 50,
                              "device": "cpu", **fields,
                              "options": {**spec_fields["options"], "num_targets": targets, **BASE, **opts}})
    t0 = time.monotonic()
    try:
        summary = analyses.get("memories").run(spec, out)
    except SpecMismatchError:  # a run of an earlier definition of this setting: start it over
        shutil.rmtree(out)
        out.mkdir(parents=True)
        demo_spec_fields(out)
        summary = analyses.get("memories").run(spec, out)
    summary["wall_seconds"] = round(time.monotonic() - t0, 1)
    return summary


def row(name: str, s: dict[str, Any]) -> dict[str, Any]:
    from memtui.engine.analyses.memories import sphere_cv

    avg = s.get("average") or {}
    cv = sphere_cv(s)

    def m(key: str, part: str = "mean") -> Any:
        v = avg.get(key)
        return v.get(part) if isinstance(v, dict) else v

    o = s.get("options") or {}
    return {"setting": name, "what": SETTINGS[name][0], "method": s.get("method"),
            "memories": f"{o.get('num_targets')}×{o.get('num_supports')}", "cv": cv["cv"],
            "cv_pairwise": cv["cv_pairwise"], "cosine": m("pairwise_cosine_mean"),
            "to_target": m("to_target_euclidean_mean"), "pairwise": m("pairwise_euclidean_mean"),
            "psnr": (m("memory_psnr"), m("memory_psnr", "std")),
            "psnr_seed_only": m("memory_psnr_seed_only"), "nll": (m("memory_nll"), m("memory_nll", "std")),
            "seconds": s.get("wall_seconds")}


def _f(v: Any, fmt: str) -> str:
    return "–" if not isinstance(v, (int, float)) else format(v, fmt)


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| setting | targets × memories | sphere CV (radii) | CV pairwise | pairwise cosine distance | "
           "distance to target / pairwise | memory PSNR dB | seed-only dB | memory NLL nats | s |",
           "|" + "---|" * 10]
    for r in rows:
        out.append(f"| {r['setting']}: {r['what']} | {r['memories']} | {_f(r['cv']['mean'], '.3f')} ± "
                   f"{_f(r['cv']['std'], '.3f')} | {_f(r['cv_pairwise']['mean'], '.3f')} | {_f(r['cosine'], '.3f')} | "
                   f"{_f(r['to_target'], '.2f')} / {_f(r['pairwise'], '.2f')} | {_f(r['psnr'][0], '.2f')} ± "
                   f"{_f(r['psnr'][1], '.2f')} | {_f(r['psnr_seed_only'], '.2f')} | {_f(r['nll'][0], '.1f')} ± "
                   f"{_f(r['nll'][1], '.1f')} | {_f(r['seconds'], '.0f')} |")
    return "\n".join(out)


def write_section(label: str, heading: str, body: str) -> None:
    start, end = f"<!-- sphere:{label}:start -->", f"<!-- sphere:{label}:end -->"
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# The sphere on the demo worlds\n"
    block = f"{start}\n{heading}\n\n{body}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", default="shipped", help="names the table in docs/sphere.md and the runs folder")
    ap.add_argument("--base", help="the world's base pipeline folder (default: the shipped demo world)")
    ap.add_argument("--ablated", help="the world's erased twin (default: the shipped one)")
    ap.add_argument("--targets", type=int, default=3)
    ap.add_argument("--only", nargs="+", choices=list(SETTINGS), help="run only these settings")
    ap.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows, d = [], None
    for name in args.only or list(SETTINGS):
        print(f"sphere_sweep: {args.label}/{name} ...", file=sys.stderr, flush=True)
        s = run_setting(args.label, name, args.base, args.ablated, args.targets)
        d = d or s.get("d")
        rows.append(row(name, s))
        print(f"sphere_sweep: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    text = table(rows)
    print(text)
    if not args.no_write:
        heading = (f"## {args.label}\n\n`benchmarks/sphere_sweep.py --label {args.label}"
                   f"{' --base ' + args.base if args.base else ''}` on {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d}, "
                   f"{args.targets} circle targets, DDIM 50 steps unless the setting says otherwise, CPU "
                   f"({args.threads} threads; seconds are wall time on a shared 2-core machine). Seeds have "
                   f"d = {d} values; memories placed at one distance from the target seed plus isotropic "
                   f"Gaussian spread would give a radii CV of about 1/sqrt(2d) = "
                   f"{(1 / (2 * d)) ** 0.5 if d else float('nan'):.3f}.")
        write_section(args.label, heading, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
