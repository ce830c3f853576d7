"""One captioned image of an item, as large as its panel allows: half-block cells by default, real
pixels (``textual-image``) when the app chose :data:`~memtui.widgets.graphics.PIXELS`. A missing
or unreadable file shows a placeholder naming the file and the reason, never a traceback."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from .graphics import PIXELS
from .preview import pixels


def image_problem(path: Path | None) -> str | None:
    """Why ``path`` cannot be shown (missing, unreadable, not an image), or None when it can."""
    if path is None:
        return "no image recorded"
    path = Path(path)
    if not path.exists():
        return f"{path.name} is missing"
    try:
        from PIL import Image

        with Image.open(path) as img:
            img.load()
    except Exception as exc:
        return f"{path.name} cannot be read ({exc.__class__.__name__}: {exc})"[:200]
    return None


ROOM_ROWS = 15  # screen rows an item's image leaves free (title, captions, numbers, footer)


class HalfBlockImage(Static):
    """An image in half-block cells, resized to the widget's width (two pixels per cell row)."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.path = Path(path)
        self.shown_width = 0

    def on_resize(self) -> None:
        """Fit the width, and leave ``ROOM_ROWS`` rows of the screen for the item's numbers (a
        square image of w columns takes w/2 rows)."""
        width = max(8, self.content_region.width or self.size.width)
        width = min(width, 2 * max(6, self.screen.size.height - ROOM_ROWS))
        if width != self.shown_width:
            self.shown_width = width
            self.update(pixels(self.path, width))


class ImagePanel(Vertical):
    """Caption over the image (or over the placeholder)."""

    def __init__(self, caption: str, path: Path | None, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.caption = caption
        self.path = None if path is None else Path(path)
        self.mode = mode
        self.problem = image_problem(self.path)

    def compose(self) -> ComposeResult:
        yield Static(Text(self.caption, style="bold"), classes="image-caption")
        if self.problem is not None or self.path is None:
            yield Static(Text(f"({self.problem})", style="red"), classes="image-missing")
        elif self.mode == PIXELS:
            from textual_image.widget import Image

            yield Image(str(self.path), classes="image-pixels")
        else:
            yield HalfBlockImage(self.path, classes="image-halfblock")
