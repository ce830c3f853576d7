"""plotext histograms in a widget (textual-plotext ``PlotextPlot``), e.g. NLL of the erased vs
reference seeds with the N(0, I) law drawn, and PSNR. Display only: values come from run files."""
from __future__ import annotations

import math
from collections.abc import Sequence

from textual_plotext import PlotextPlot

SERIES_COLORS: tuple[str, ...] = ("orange", "cyan", "magenta", "green", "yellow")


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
        bins = 20
        biggest = max((len(v) for v in self.series.values()), default=0)
        for (name, vals), color in zip(self.series.items(), SERIES_COLORS):
            if vals:
                plt.hist(vals, bins=bins, label=f"{name} ({len(vals)})", color=color, xside=None)
        if self.law is not None and biggest:
            mean, std, label = self.law
            # scale the law to the biggest series' counts (plotext bins each series over its range)
            big = max(self.series.values(), key=len)
            width = (max(big) - min(big)) / bins if max(big) > min(big) else (hi - lo) / bins
            xs, ys = law_curve(mean, std, lo, hi, len(big), width)
            plt.plot(xs, ys, label=label, color="white", marker="braille")
        plt.xlim(lo, hi)
        self.refresh()
