"""Half-block image previews (rich-pixels: two pixels per cell, foreground + background colour),
which work in any truecolour/256-colour terminal, over SSH and inside tmux."""
from __future__ import annotations

from pathlib import Path

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static


def pixels(path: Path | None, width: int) -> RenderableType:
    """A half-block rendering of the image at ``path`` resized to ``width`` × ``width`` pixels
    (``width`` columns × ``width/2`` rows), or a placeholder text when it is missing/unreadable."""
    if path is None or not Path(path).exists():
        return Text("(no image)", style="dim")
    try:
        from PIL import Image
        from rich_pixels import Pixels

        with Image.open(path) as img:
            rgb = img.convert("RGB")
            h = max(2, round(width * rgb.height / max(rgb.width, 1)))
            rgb = rgb.resize((width, h + (h % 2)), Image.Resampling.BILINEAR)
            return Pixels.from_image(rgb)
    except Exception as exc:  # corrupt file: say so instead of crashing the view
        return Text(f"(unreadable: {exc.__class__.__name__})", style="red")


def image_grid(items: list[tuple[str, Path | None]], width: int, columns: int) -> RenderableType:
    """Captioned previews laid out ``columns`` per row."""
    grid = Table.grid(padding=(0, 1))
    for _ in range(columns):
        grid.add_column(width=width)
    row: list[RenderableType] = []
    for caption, path in items:
        row.append(Group(pixels(path, width), Text(caption, style="dim", overflow="fold")))
        if len(row) == columns:
            grid.add_row(*row)
            row = []
    if row:
        grid.add_row(*row, *([Text("")] * (columns - len(row))))
    return grid


class PreviewPair(Static):
    """Query (left) and reconstruction (right) of one item, side by side, with a caption."""

    def __init__(self, width_px: int = 24, **kwargs) -> None:
        super().__init__(Text("(no item selected)", style="dim"), **kwargs)
        self.max_px = width_px
        self.width_px = width_px
        self.shown: tuple[str, ...] = ()
        self.args: tuple = (None, None, None, "")

    def on_resize(self) -> None:
        """Fit both images side by side in the available width (at most ``max_px`` each)."""
        width = self.content_region.width or self.size.width
        fit = max(8, min(self.max_px, (width - 4) // 2)) if width else self.max_px
        if fit != self.width_px:
            self.width_px = fit
            self.shown = ()
            self.show_item(*self.args)

    def show_item(self, item_id: str | None, query: Path | None, recon: Path | None,
                  caption: str = "") -> None:
        """Render the pair for one item (a no-op if it is already shown)."""
        self.args = (item_id, query, recon, caption)
        key = (str(item_id), str(query), str(recon), caption)
        if key == self.shown:
            return
        self.shown = key
        if item_id is None:
            self.update(Text("(no item selected)", style="dim"))
            return
        grid = Table.grid(padding=(0, 2))
        grid.add_column()
        grid.add_column()
        grid.add_row(Text("query", style="bold"), Text("reconstruction", style="bold"))
        grid.add_row(pixels(query, self.width_px), pixels(recon, self.width_px))
        self.update(Group(grid, Text(f"{item_id}: {caption}"[: 2 * self.width_px + 2], style="italic")))
