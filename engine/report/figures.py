"""The report's figures, drawn with matplotlib (Agg backend, PNG), mirroring the paper's:
seed-NLL histograms of the erased and reference sets with the N(0, I) law (figures 2–3), PSNR
distributions per run and relative distances (figure 5), query / reconstruction grids, and for
memories runs the distance distributions and memory grids (figures 6–9).

matplotlib is the optional ``report`` extra (``pip install 'memtui[report]'``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memtui.engine import metrics
from memtui.engine.report.collect import RunData, values

COLORS = {"erased": "#d62728", "reference": "#1f77b4", "normal": "#2ca02c", "memory": "#9467bd",
          "control": "#7f7f7f", "target": "#ff7f0e"}


def plt() -> Any:
    """matplotlib.pyplot on the Agg backend; ImportError naming the extra when missing."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("reports need matplotlib: pip install 'memtui[report]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as pyplot

    return pyplot


def save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt().close(fig)
    return path


def nll_histogram(run: RunData, path: Path) -> Path | None:
    """Histogram of seed NLL (nats) of each set, densities, with the exact N(0, I) law's pdf."""
    sets = {s: values(run, s, "nll") for s in ("erased", "reference", "memory", "control", "target", "scramble")}
    sets = {s: v for s, v in sets.items() if len(v)}
    if not sets:
        return None
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.6))
    allv = np.concatenate(list(sets.values()))
    d = run.seed_dim()
    lo, hi = float(allv.min()), float(allv.max())
    if d:
        mu, sd = metrics.nll_law(d)
        lo, hi = min(lo, mu - 4 * sd), max(hi, mu + 4 * sd)
    span = float(allv.max() - allv.min())
    width = max(min((hi - lo) / 40, span / 12), (hi - lo) / 400) if hi > lo else 1.0
    bins = np.arange(lo, hi + width, width)
    for s, v in sets.items():
        ax.hist(v, bins=bins, density=True, alpha=0.55, color=COLORS.get(s), label=f"{s} (n={len(v)})")
    if d:
        x = np.linspace(lo, hi, 400)
        ax.plot(x, metrics.nll_law_pdf(x, d), color=COLORS["normal"], lw=2, label=f"N(0, I) law, d={d}")
    ax.set_xlabel("seed NLL (nats)")
    ax.set_ylabel("density")
    ax.set_title(f"{run.name}: {run.method} / {run.concept}")
    ax.legend(fontsize=8)
    return save(fig, path)


def psnr_distributions(runs: Sequence[RunData], path: Path) -> Path | None:
    """Box plots of reconstruction PSNR (dB) per run and set."""
    data, labels, colors = [], [], []
    for run in runs:
        for s in run.sets():
            v = values(run, s, "psnr")
            if len(v):
                data.append(v)
                labels.append(f"{run.name}\n{s}")
                colors.append(COLORS.get(s, "#999999"))
    if not data:
        return None
    p = plt()
    fig, ax = p.subplots(figsize=(max(4.0, 1.1 * len(data) + 1), 3.8))
    bp = ax.boxplot(data, patch_artist=True)
    for patch, c in zip(bp["boxes"], colors):
        patch.set_facecolor(c)
        patch.set_alpha(0.6)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("reconstruction PSNR")
    return save(fig, path)


def relative_distances(runs: Sequence[RunData], path: Path) -> Path | None:
    """Bar chart of each run's relative distance (EMD(erased, N) / EMD(reference, N))."""
    pts = [(r.name, r.summary.get("relative_distance")) for r in runs]
    pts = [(n, float(v)) for n, v in pts if isinstance(v, (int, float)) and np.isfinite(v)]
    if not pts:
        return None
    p = plt()
    fig, ax = p.subplots(figsize=(max(4.0, 0.9 * len(pts) + 1.5), 3.4))
    ax.bar(range(len(pts)), [v for _, v in pts], color=COLORS["erased"], alpha=0.7)
    ax.axhline(1.0, color="k", lw=1, ls="--", label="erased as close to N(0, I) as reference")
    ax.set_xticks(range(len(pts)), [n for n, _ in pts], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel("relative distance")
    ax.legend(fontsize=8)
    return save(fig, path)


def _img(run: RunData, rel: Any) -> np.ndarray | None:
    from PIL import Image

    if not isinstance(rel, str) or not (run.path / rel).is_file():
        return None
    try:
        with Image.open(run.path / rel) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"image {rel} cannot be read ({type(e).__name__}: {e})") from e


def pairs_grid(run: RunData, path: Path, n: int = 8) -> Path | None:
    """Grid of query (top) / reconstruction (bottom) pairs: the first ``n`` ok items of each set
    (erased first), each titled with its PSNR."""
    recs = [r for s in ("erased", "reference") for r in run.ok(s)[: n // 2 if run.ok("reference") else n]]
    recs = [r for r in recs if _img(run, r.get("query")) is not None and _img(run, r.get("recon")) is not None][:n]
    if not recs:
        return None
    p = plt()
    fig, axes = p.subplots(2, len(recs), figsize=(1.6 * len(recs) + 0.5, 3.6), squeeze=False)
    for j, r in enumerate(recs):
        for i, key in enumerate(("query", "recon")):
            ax = axes[i][j]
            ax.imshow(_img(run, r[key]))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{r.get('set', '')}\n{r['item_id']}", fontsize=6)
            else:
                psnr = r.get("psnr")
                ax.set_title(f"{psnr:.1f} dB" if isinstance(psnr, (int, float)) else "", fontsize=7)
        if j == 0:
            axes[0][0].set_ylabel("query", fontsize=8)
            axes[1][0].set_ylabel("reconstruction", fontsize=8)
    return save(fig, path)


def _seeds(run: RunData, recs: Sequence[dict[str, Any]]) -> np.ndarray | None:
    from safetensors.torch import load_file

    parts = (run.summary.get("method_seed") or {}).get("parts") or ["z_T"]
    out = []
    for r in recs:
        rel = r.get("latents") or f"latents/{r['item_id']}.safetensors"
        f = run.path / str(rel)
        if not f.is_file():
            return None
        lat = load_file(str(f))
        # the seed as the run's method defines it: all its parts, flattened and concatenated
        out.append(np.concatenate([lat[k].double().numpy().reshape(-1) for k in parts if k in lat]))
    return np.stack(out) if out else None


def memory_distances(run: RunData) -> dict[str, dict[str, Any]]:
    """Per target id: Euclidean distances among its memories' seeds (pairs i < j) and from each
    memory to the target's own seed (when a ``target`` record with latents exists)."""
    out: dict[str, dict[str, Any]] = {}
    targets = {str(r.get("target_id")) for r in run.ok("memory")}
    for t in sorted(targets):
        mem = [r for r in run.ok("memory") if str(r.get("target_id")) == t]
        Z = _seeds(run, mem)
        if Z is None or len(Z) < 2:
            continue
        D, _ = metrics.pairwise_distances(Z)
        iu = np.triu_indices(len(Z), 1)
        entry: dict[str, Any] = {"pairwise": D[iu], "n": len(Z)}
        tgt = [r for r in run.ok("target") if str(r.get("target_id")) == t]
        zt = _seeds(run, tgt[:1]) if tgt else None
        if zt is not None:
            entry["to_target"] = np.linalg.norm(Z - zt[0], axis=1)
        out[t] = entry
    return out


def memory_distance_histogram(dists: dict[str, dict[str, Any]], title: str, path: Path) -> Path | None:
    """Histogram of pairwise memory distances (and memory -> target seed distances, the sphere's radii,
    with their CV in the legend) per target."""
    if not dists:
        return None
    p = plt()
    fig, ax = p.subplots(figsize=(6, 3.6))
    for t, e in dists.items():
        ax.hist(e["pairwise"], bins=20, alpha=0.5, label=f"target {t}: memory pairs")
        if "to_target" in e:
            tt = e["to_target"]
            ax.hist(tt, bins=20, alpha=0.5, histtype="step", lw=2,
                    label=f"target {t}: to target seed (CV {tt.std() / tt.mean():.3f})")
    ax.set_xlabel("Euclidean distance between seeds")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return save(fig, path)


def memory_grid(run: RunData, target_id: str, path: Path, n: int = 10) -> Path | None:
    """The target image then up to ``n`` memory reconstructions of one target, titled by PSNR."""
    tgt = [r for r in run.ok("target") if str(r.get("target_id")) == target_id]
    mem = [r for r in run.ok("memory") if str(r.get("target_id")) == target_id]
    tiles = []
    if tgt:
        im = _img(run, tgt[0].get("query")) if tgt[0].get("query") else _img(run, tgt[0].get("recon"))
        if im is not None:
            tiles.append(("target", im))
    for r in mem[:n]:
        im = _img(run, r.get("recon"))
        if im is not None:
            psnr = r.get("psnr")
            tiles.append((f"{psnr:.1f} dB" if isinstance(psnr, (int, float)) else r["item_id"], im))
    if not tiles:
        return None
    p = plt()
    fig, axes = p.subplots(1, len(tiles), figsize=(1.5 * len(tiles) + 0.5, 2.0), squeeze=False)
    for ax, (title, im) in zip(axes[0], tiles):
        ax.imshow(im)
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{run.name}: memories of target {target_id}", fontsize=8)
    return save(fig, path)
