"""Item detail: one item of a run, large. Its images side by side (the query, the method's
reconstruction and, where the method reconstructs with more than its seed, the seed-only
reconstruction), its numbers, and its error when it failed. ``n``/``p`` step through the items in
the Run screen's table order."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..widgets.graphics import HALFBLOCK
from ..widgets.image_panel import ImagePanel

# record keys naming images, in the order shown, with their captions
IMAGE_KEYS: tuple[tuple[str, str], ...] = (
    ("query", "query"), ("recon", "reconstruction"), ("seed_only", "seed-only (DDIM from the seed)"),
)
SHOWN_KEYS = {"item_id", "set", "status", "error", "prompt", "source", "psnr", "psnr_seed_only", "nll",
              "seed_dim", "z_shape", "nll_parts", "latents"} | {k for k, _ in IMAGE_KEYS}


def item_images(run_dir: Path, rec: dict[str, Any]) -> list[tuple[str, Path | None]]:
    """(caption, path) of each image the record names (query and reconstruction always: a record
    without paths, from an older run, gets ``images/<id>.query.png`` / ``.recon.png``). Paths are
    relative to the run directory; one leaving it is not followed."""
    item_id = str(rec.get("item_id", ""))
    out: list[tuple[str, Path | None]] = []
    for key, caption in IMAGE_KEYS:
        rel = rec.get(key)
        if rel is None and key in ("query", "recon"):
            rel = f"images/{item_id}.{key}.png"
        if rel is None:
            continue
        path = (run_dir / str(rel)).resolve()
        out.append((caption, path if path.is_relative_to(run_dir.resolve()) else None))
    return out


def _num(v: Any, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else "-"


def item_numbers(rec: dict[str, Any], law: tuple[float, float] | None = None) -> Table:
    """The item's numbers as a two-column table (PSNR in dB, NLL in nats; with the run's N(0, I)
    NLL law, the seed's z-score under it)."""
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("item", str(rec.get("item_id", "")))
    t.add_row("set", str(rec.get("set", "")))
    status = str(rec.get("status", ""))
    t.add_row("status", Text(status, style="bold red" if status == "error" else "green"))
    t.add_row("PSNR", f"{_num(rec.get('psnr'), '.2f')} dB")
    if "psnr_seed_only" in rec:
        t.add_row("seed-only PSNR", f"{_num(rec.get('psnr_seed_only'), '.2f')} dB")
    nll = rec.get("nll")
    line = f"{_num(nll, '.2f')} nats"
    if law is not None and isinstance(nll, (int, float)) and law[1] > 0:
        line += f"  (z = {(nll - law[0]) / law[1]:+.2f} under N(0,I): mean {law[0]:.1f}, std {law[1]:.1f})"
    t.add_row("seed NLL", line)
    for part, v in (rec.get("nll_parts") or {}).items():
        t.add_row(f"  NLL of {part}", f"{_num(v, '.2f')} nats")
    if rec.get("seed_dim") is not None:
        t.add_row("seed dimension", str(rec.get("seed_dim")))
    if rec.get("z_shape") is not None:
        t.add_row("latent shape", "×".join(str(d) for d in rec.get("z_shape") or []))
    for key in sorted(k for k in rec if k not in SHOWN_KEYS):
        v = rec[key]
        if isinstance(v, (str, int, float, bool)) or v is None:
            t.add_row(key, _num(v, ".4g") if isinstance(v, float) else str(v))
    t.add_row("prompt", str(rec.get("prompt", "")))
    t.add_row("source", str(rec.get("source", "")))
    return t


class ItemScreen(Screen):
    """One item, large; Escape goes back to the run."""

    HELP = ("The item's query image beside its reconstruction (and the seed-only reconstruction, "
            "plain DDIM from the seed alone, where the method's own uses more), its PSNR and seed "
            "NLL, and its error if it failed. Images are half-block cells (two pixels per cell), or "
            "real pixels in a terminal with kitty graphics or Sixel when memtui[images] is installed "
            "(never inside tmux).")
    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "Back"),
        Binding("n,j,down", "step(1)", "Next item"),
        Binding("p,k,up", "step(-1)", "Previous item"),
    ]

    def __init__(self, run_dir: Path, records: dict[str, dict[str, Any]], order: list[str], item_id: str,
                 law: tuple[float, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = Path(run_dir)
        self.records = records
        self.order = order or [item_id]
        self.index = self.order.index(item_id) if item_id in self.order else 0
        self.law = law

    @property
    def item_id(self) -> str:
        return self.order[self.index]

    def compose(self) -> ComposeResult:
        yield Static("", id="item-title", classes="title-line")
        with VerticalScroll(id="item-body"):
            yield Horizontal(id="item-images")
            yield Static("", id="item-error")
            yield Static("", id="item-numbers")
        yield Footer()

    def on_mount(self) -> None:
        self.show()

    def show(self) -> None:
        rec = self.records.get(self.item_id, {"item_id": self.item_id})
        self.query_one("#item-title", Static).update(
            f"Item {self.item_id} · {self.index + 1} of {len(self.order)} · {self.run_dir.name}")
        mode = getattr(self.app, "graphics", HALFBLOCK)
        box = self.query_one("#item-images", Horizontal)
        box.remove_children()
        box.mount_all([ImagePanel(caption, path, mode, classes="item-image")
                       for caption, path in item_images(self.run_dir, rec)])
        err = self.query_one("#item-error", Static)
        err.display = bool(rec.get("error"))
        err.update(Text(f"error: {rec.get('error')}", style="bold red") if rec.get("error") else "")
        self.query_one("#item-numbers", Static).update(item_numbers(rec, self.law))

    def action_step(self, delta: int) -> None:
        new = min(max(self.index + delta, 0), len(self.order) - 1)
        if new != self.index:
            self.index = new
            self.show()
