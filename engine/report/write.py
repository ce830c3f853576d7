"""``write_report(run_dirs, out_dir)``: a Markdown report (``report.md``) with PNG figures
(``figures/``) and CSV files of every number (``runs.csv``, ``items.csv``, ``method_concept.csv``,
``detection.csv``, ``memory_distances.csv``, ``sweep_grid.csv``) for one or more run directories
or sweep folders.
"""
from __future__ import annotations

import csv
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from memtui.engine.data.datasets import safe_id
from memtui.engine.report import figures as F
from memtui.engine.report.collect import DamagedRunError, RunData, item_rows, load_run, run_row, set_stat
from memtui.engine.report.sweep_grid import expand_sweeps, grid_heatmap, grid_rows, groups, matrix

__all__ = ["write_report"]


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return "–" if v is None else str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "–" if not math.isfinite(v) else f"{float(v):.{digits}g}"
    return str(v)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path | None:
    if not rows:
        return None
    cols: list[str] = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, restval="")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    os.replace(tmp, path)
    return path


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = safe_id(Path(p).resolve().name)
        name, i = base, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.append(name)
    return names


def method_concept_rows(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """One row per concept-level run: method, concept, relative distance, PSNR and NLL per set."""
    rows = []
    for r in runs:
        if r.analysis != "concept":
            continue
        row = {"method": r.method, "concept": r.concept, "run": r.name,
               "relative_distance": r.summary.get("relative_distance")}
        for s in ("erased", "reference"):
            for key in ("psnr", "psnr_seed_only", "nll"):
                m, sd = set_stat(r, s, key)
                row[f"{s}_{key}_mean"], row[f"{s}_{key}_std"] = m, sd
        rows.append(row)
    return rows


def _matrix(rows: Sequence[dict[str, Any]], key: str) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    concepts = list(dict.fromkeys(r["concept"] for r in rows))
    cell = {(r["method"], r["concept"]): r[key] for r in rows}
    return _table(["method \\ concept", *concepts], [[m, *[cell.get((m, c)) for c in concepts]] for m in methods])


_DAMAGE = (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError, ZeroDivisionError)


def _warn_stderr(msg: str) -> None:
    print(f"memtui: report: {msg}", file=sys.stderr)


def _run_parts(r: RunData, figs: Path) -> dict[str, Any]:
    """Everything of one run the report shows (tables' rows, per-run figures, CSV rows); raises
    on a damaged run, whose figures are then removed by the caller."""
    parts: dict[str, Any] = {"row": [r.name, r.analysis, r.method, r.concept, r.summary.get("status", "–"),
                                     len(r.ok()), f"`{r.path}`"]}
    sets = []
    for s in r.sets():
        pm, ps = set_stat(r, s, "psnr")
        om, os_ = set_stat(r, s, "psnr_seed_only")
        nm, ns = set_stat(r, s, "nll")
        n_ok = ((r.summary.get("sets") or {}).get(s) or {}).get("n_ok", len(r.ok(s)))
        sets.append([r.name, s, n_ok, f"{_fmt(pm)} ± {_fmt(ps)}",
                     "–" if om is None else f"{_fmt(om)} ± {_fmt(os_)}", f"{_fmt(nm)} ± {_fmt(ns)}"])
    parts["sets"] = sets
    parts["mc"] = method_concept_rows([r])
    parts["det"] = [{"run": r.name, "detector": key, "set": s, "rule": d.get("rule"), **dict(st.items())}
                    for key, d in (r.summary.get("detection") or {}).items()
                    for s, st in (d.get("sets") or {}).items()]
    parts["run_row"], parts["items"] = run_row(r), item_rows(r)
    parts["hist"] = F.nll_histogram(r, figs / f"nll_{r.name}.png")
    parts["grid"] = None if r.is_memories else F.pairs_grid(r, figs / f"pairs_{r.name}.png")
    mem_rows: list[dict[str, Any]] = []
    mem_md: list[str] = []
    if r.is_memories:
        dists = F.memory_distances(r)
        for t, e in dists.items():
            pw = e["pairwise"]
            row = {"run": r.name, "target_id": t, "n_memories": e["n"], "pairwise_mean": float(pw.mean()),
                   "pairwise_std": float(pw.std()), "pairwise_cv": float(pw.std() / pw.mean())}
            if "to_target" in e:
                tt = e["to_target"]
                row["to_target_mean"], row["to_target_std"] = float(tt.mean()), float(tt.std())
                row["cv"] = float(tt.std() / tt.mean())  # the sphere's: over the radii (Figure 6)
            mem_rows.append(row)
        mem_md.append(f"\n### {r.name}\n")
        if (f := F.memory_distance_histogram(dists, r.name, figs / f"memory_distances_{r.name}.png")):
            mem_md.append(f"![distances {r.name}](figures/{f.name})\n")
        targets = list(dict.fromkeys(str(x.get("target_id")) for x in r.ok("memory")))
        for t in targets[:6]:
            if (f := F.memory_grid(r, t, figs / f"memories_{r.name}_{safe_id(t)}.png")):
                mem_md.append(f"\n![memories {t}](figures/{f.name})\n")
    parts["mem_rows"], parts["mem_md"] = mem_rows, mem_md
    return parts


def write_report(run_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                 warn: Callable[[str], None] | None = None) -> Path:
    """Write the report of ``run_dirs`` into ``out_dir``; returns the path of ``report.md``. A sweep
    folder (``sweep.json``) stands for its cells' run directories and adds the grid section. A run
    that cannot be read (damaged files, an unreadable image) is skipped: ``warn`` (default: a line
    on stderr) gets its name and reason, and report.md lists it under "Skipped runs"."""
    if not run_dirs:
        raise ValueError("a report needs at least one run directory")
    warn = warn or _warn_stderr
    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    paths, sweeps = expand_sweeps([Path(p) for p in run_dirs])
    if not paths:
        raise ValueError("no run directories to report on (the sweeps given have no cell runs yet)")
    runs: list[RunData] = []
    parts: dict[str, dict[str, Any]] = {}
    skipped: list[tuple[str, Path, str]] = []
    for p, n in zip(paths, _unique_names(paths)):
        before = set(figs.iterdir())
        try:
            r = load_run(p, n)
            parts[r.name] = _run_parts(r, figs)
            runs.append(r)
        except _DAMAGE as e:
            for f in set(figs.iterdir()) - before:  # the skipped run's figures made so far
                f.unlink(missing_ok=True)
            reason = f"{type(e).__name__}: {e}" if not isinstance(e, DamagedRunError) else str(e)
            reason = " ".join(reason.split())
            skipped.append((n, p, reason))
            warn(f"skipped run {n} ({p}): {reason}")
    md: list[str] = [f"# memtui report\n\n{len(runs)} run(s)"
                     + (f", {len(skipped)} skipped (damaged)" if skipped else "")
                     + f", written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.\n"]
    md.append(_table(["run", "analysis", "method", "concept", "status", "items ok", "path"],
                     [parts[r.name]["row"] for r in runs]))
    if skipped:
        md.append("\n## Skipped runs\n\nThese runs could not be read and are left out of every table, "
                  "figure and CSV file:\n")
        md += [f"- `{n}` (`{p}`) skipped: {reason.replace('|', '/')}" for n, p, reason in skipped]

    def figure(fn: Callable[[], Path | None], what: str) -> Path | None:
        try:
            return fn()
        except _DAMAGE as e:
            warn(f"figure {what} left out: {type(e).__name__}: {e}")
            md.append(f"\n(figure {what} left out: {type(e).__name__})\n")
            return None

    # ---- per-run numbers
    md.append("\n## Per-set results\n\nPSNR in dB (query vs the method's reconstruction); seed-only PSNR in dB "
              "(query vs plain DDIM sampling from the seed z_T alone with the prompt, no other state: the "
              "paper's \"likely seed under the model's own sampler\"; – for runs written before it existed); "
              "seed NLL in nats (all the method's seed parts together); mean ± std.\n")
    md.append(_table(["run", "set", "n ok", "PSNR", "seed-only PSNR", "NLL"],
                     [row for r in runs for row in parts[r.name]["sets"]]))

    mc = [row for r in runs for row in parts[r.name]["mc"]]
    if mc:
        md.append("\n## Relative distance (figure 5)\n\nEMD(erased, N(0,I)) / EMD(reference, N(0,I)) of the seed "
                  "NLLs; 1 means the erased images' seeds are as typical as ordinary images' seeds.\n")
        md.append(_matrix(mc, "relative_distance"))
        md.append("\n\nEMDs per run:\n")
        md.append(_table(["run", "erased–normal", "reference–normal", "erased–reference", "relative distance"],
                         [[r.name, r.summary.get("erased_normal"), r.summary.get("reference_normal"),
                           r.summary.get("erased_reference"), r.summary.get("relative_distance")]
                          for r in runs if r.analysis == "concept"]))
        md.append("\n\nMean erased-set PSNR (dB):\n")
        md.append(_matrix(mc, "erased_psnr_mean"))
        if any(row.get("erased_psnr_seed_only_mean") is not None for row in mc):
            md.append("\n\nMean erased-set seed-only PSNR (dB):\n")
            md.append(_matrix(mc, "erased_psnr_seed_only_mean"))
        if (f := figure(lambda: F.relative_distances(runs, figs / "relative_distance.png"), "relative distances")):
            md.append(f"\n\n![relative distances](figures/{f.name})")

    # ---- sweeps: the grid across erasure methods x concepts
    sweep_rows: list[dict[str, Any]] = []
    for sw in sweeps:
        rows_sw = grid_rows(sw, runs)
        sweep_rows += rows_sw
        md.append(f"\n## Sweep {sw.name}: the grid (figure 5)\n\n{len(sw.data['cells'])} cell(s) in "
                  f"`{sw.path}`, {len(rows_sw)} with a run"
                  + (f"; not started yet: {', '.join(sw.missing)}" if sw.missing else "") + ". "
                  "Rows: the checkpoints' erasure methods; columns: concepts. Cells that are not finished "
                  "show what they have so far (status in sweep_grid.csv).\n")
        for (base, method), g in groups(rows_sw).items():
            md.append(f"\n### base {base} · {method}\n")
            for key, what in (("erased_psnr_mean", "Mean erased-set PSNR (dB)"),
                              ("erased_psnr_seed_only_mean", "Mean erased-set seed-only PSNR (dB)"),
                              ("relative_distance", "Relative distance EMD(erased, N) / EMD(reference, N)")):
                labels, concepts, m = matrix(g, key)
                if np.isnan(m).all():
                    continue
                md.append(f"\n{what}:\n")
                md.append(_table(["erasure \\ concept", *concepts],
                                 [[lab, *[None if np.isnan(v) else float(v) for v in m[i]]]
                                  for i, lab in enumerate(labels)]))
            fname = f"sweep_{safe_id(sw.name)}_{safe_id(base)}_{safe_id(method)}.png"
            if (f := figure(lambda: grid_heatmap(g, f"{sw.name}: base {base}, {method}", figs / fname),
                            f"grid {sw.name}/{base}/{method}")):
                md.append(f"\n\n![grid {sw.name} {base} {method}](figures/{f.name})")

    # ---- figures
    if (f := figure(lambda: F.psnr_distributions(runs, figs / "psnr.png"), "PSNR distributions")):
        md.append(f"\n## PSNR distributions\n\n![PSNR](figures/{f.name})")
    hist = [(r, parts[r.name]["hist"]) for r in runs]
    if any(f for _, f in hist):
        md.append("\n## Seed NLL vs the N(0, I) law (figures 2–3)\n")
        md += [f"\n### {r.name}\n\n![NLL {r.name}](figures/{f.name})" for r, f in hist if f]
    grids = [(r, parts[r.name]["grid"]) for r in runs if not r.is_memories]
    if any(f for _, f in grids):
        md.append("\n## Queries and reconstructions\n")
        md += [f"\n### {r.name}\n\n![pairs {r.name}](figures/{f.name})" for r, f in grids if f]

    # ---- detection
    det_rows = [row for r in runs for row in parts[r.name]["det"]]
    if det_rows:
        md.append("\n## Concept detection\n\nFraction of images the detector flags (rates 0–1).\n")
        fields = [k for k in dict.fromkeys(k for row in det_rows for k in row) if k.endswith("_rate")]
        md.append(_table(["run", "detector", "set", "n", *fields],
                         [[d["run"], d["detector"], d["set"], d.get("n"), *[d.get(k) for k in fields]] for d in det_rows]))

    # ---- memories
    mem_runs = [r for r in runs if r.is_memories]
    if mem_runs:
        md.append("\n## Memories (figures 6–9)\n")
    for r in mem_runs:
        md += parts[r.name]["mem_md"]
    mem_rows = [row for r in mem_runs for row in parts[r.name]["mem_rows"]]
    if mem_rows:
        cols = list(dict.fromkeys(k for row in mem_rows for k in row))
        md.append("\nEuclidean distances between memory seeds (pairs i < j) and to the target's seed:\n")
        md.append(_table(cols, [[row.get(c) for c in cols] for row in mem_rows]))

    # ---- scramble test
    scr_runs = [r for r in runs if r.analysis == "scramble"]
    if scr_runs:
        md.append("\n## Scrambled images (the scramble test)\n\nEach target image and its patch-scrambled "
                  "copies inverted alike: a scrambled image, no longer a plausible image, should get a less "
                  "likely seed (higher NLL, nats). The NLL histogram of the run above shows both sets "
                  "against the N(0, I) law.\n")
        rows = []
        for r in scr_runs:
            for tid, f in (r.summary.get("targets") or {}).items():
                sc, inc = f.get("scrambled_nll") or {}, f.get("nll_increase") or {}
                rows.append([r.name, tid, _fmt(f.get("original_nll")), f"{_fmt(sc.get('mean'))} ± {_fmt(sc.get('std'))}",
                             f"{_fmt(inc.get('mean'))} ± {_fmt(inc.get('std'))}", _fmt(f.get("original_psnr")),
                             _fmt((f.get("scrambled_psnr") or {}).get("mean"))])
        md.append(_table(["run", "target", "NLL", "NLL scrambled", "increase", "PSNR dB", "PSNR scrambled dB"], rows))
        for r in scr_runs:
            frac = r.summary.get("fraction_less_likely")
            inc = r.summary.get("nll_increase") or {}
            md.append(f"\n\n{r.name}: NLL increase {_fmt(inc.get('mean'))} ± {_fmt(inc.get('std'))} nats; "
                      f"scrambles with a less likely seed: {_fmt(100 * frac if isinstance(frac, (int, float)) else None)}%")

    # ---- CSV files
    written = {
        "runs.csv": _write_csv(out / "runs.csv", [parts[r.name]["run_row"] for r in runs]),
        "items.csv": _write_csv(out / "items.csv", [row for r in runs for row in parts[r.name]["items"]]),
        "method_concept.csv": _write_csv(out / "method_concept.csv", mc),
        "detection.csv": _write_csv(out / "detection.csv", det_rows),
        "memory_distances.csv": _write_csv(out / "memory_distances.csv", mem_rows),
        "sweep_grid.csv": _write_csv(out / "sweep_grid.csv", sweep_rows),
    }
    md.append("\n## Data files\n\n" + "\n".join(f"- [`{n}`]({n})" for n, p in written.items() if p))
    report = out / "report.md"
    tmp = report.with_name(".report.md.tmp")
    tmp.write_text("\n".join(md) + "\n", encoding="utf-8")
    os.replace(tmp, report)
    return report
