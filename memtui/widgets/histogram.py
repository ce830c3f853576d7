"""plotext histograms in a widget (textual-plotext ``PlotextPlot``), e.g. NLL of the erased vs
reference seeds with the N(0, I) law drawn, and PSNR. Display only: values come from run files."""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from textual_plotext import PlotextPlot

SERIES_COLORS: tuple[str, ...] = ("orange", "cyan", "magenta", "green", "yellow")
BINS = 24


def law_curve(mean: float, std: float, lo: float, hi: float, n_samples: int, bin_width: float,
              points: int = 60) -> tuple[list[float], list[float]]:
    """A Gaussian density N(mean, std²) over [lo, hi] scaled to a histogram of ``n_samples`` values
    in bins ``bin_width`` wide (expected count per bin)."""
    width = bin_width if bin_width > 0 else 1.0
    xs = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
    ys = [n_samples * width * math.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
          for x in xs]
    return xs, ys


class Histogram(PlotextPlot):
    """Overlaid histograms of named series, optionally with a law curve N(mean, std²)."""

    def __init__(self, title: str, xlabel: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title_text = title
        self.xlabel = xlabel
        self.series: dict[str, list[float]] = {}
        self.law: tuple[float, float, str] | None = None

    def on_mount(self) -> None:
        self.redraw()

    def set_data(self, series: dict[str, Sequence[float]],
                 law: tuple[float, float, str] | None = None) -> None:
        """Replace the series (finite values only) and the law (mean, std, label); redraws."""
        self.series = {k: [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
                       for k, vals in series.items()}
        self.law = law
        self.redraw()

    def redraw(self) -> None:
        """Histograms over one shared set of bins (so the series and the law share a scale):
        each series as bars of counts, the law as expected counts per bin."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.title_text)
        plt.xlabel(self.xlabel)
        values = [v for vals in self.series.values() for v in vals]
        if not values:
            plt.title(f"{self.title_text} — no values yet")
            self.refresh()
            return
        lo, hi = min(values), max(values)
        if self.law is not None:
            mean, std, _ = self.law
            lo, hi = min(lo, mean - 3 * std), max(hi, mean + 3 * std)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = BINS
        width = (hi - lo) / bins
        shown = [(name, vals) for name, vals in self.series.items() if vals]
        for (name, vals), color in zip(shown, itertools.cycle(SERIES_COLORS)):
            xs, ys = step_outline(bin_counts(vals, lo, hi, bins), lo, width)
            plt.plot(xs, ys, label=f"{name} ({len(vals)})", color=color, marker="hd",
                     fillx=len(shown) == 1)
        if self.law is not None:
            mean, std, label = self.law
            n = max(len(v) for _, v in shown)
            xs, ys = law_curve(mean, std, lo, hi, n, width)
            plt.plot(xs, ys, label=label, color="white", marker="braille")
        plt.xlim(lo, hi)
        self.refresh()


def step_outline(counts: Sequence[int], lo: float, width: float) -> tuple[list[float], list[float]]:
    """Points tracing a histogram's outline (a step line) for ``counts`` of bins ``width`` wide."""
    xs: list[float] = [lo]
    ys: list[float] = [0.0]
    for i, c in enumerate(counts):
        xs += [lo + i * width, lo + (i + 1) * width]
        ys += [float(c), float(c)]
    xs.append(lo + len(counts) * width)
    ys.append(0.0)
    return xs, ys


def bin_counts(values: Sequence[float], lo: float, hi: float, bins: int) -> list[int]:
    """Counts of ``values`` in ``bins`` equal bins over [lo, hi] (hi falls in the last bin)."""
    counts = [0] * bins
    span = (hi - lo) or 1.0
    for v in values:
        i = int((v - lo) / span * bins)
        counts[min(max(i, 0), bins - 1)] += 1
    return counts
