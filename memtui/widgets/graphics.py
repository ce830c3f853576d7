"""How the console draws images: ``halfblock`` (rich-pixels, two pixels per cell; any colour
terminal, over SSH and inside tmux: the default and the fallback) or ``pixels`` (real pixels
through the optional ``textual-image`` extra: kitty's graphics protocol or Sixel, where the
terminal answers that it has one).

:func:`choose_graphics` runs once, before the app starts: ``textual-image`` asks the terminal what
it supports when it is imported, which cannot happen once Textual owns the terminal."""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from ..config import IMAGE_SETTINGS as SETTINGS  # the config key ``images`` / ``memtui --images``

HALFBLOCK, PIXELS = "halfblock", "pixels"


def in_multiplexer(env: Mapping[str, str]) -> bool:
    """Whether the console runs inside tmux or GNU screen (which pass graphics escapes through
    only when configured to, and then misplace them on redraws)."""
    term = env.get("TERM", "")
    return bool(env.get("TMUX") or env.get("STY") or term.startswith(("screen", "tmux")))


def choose_graphics(setting: str = "auto", env: Mapping[str, str] | None = None,
                    tty: bool | None = None) -> tuple[str, str]:
    """(mode, why): :data:`PIXELS` only for ``setting`` "auto" outside tmux/screen, on a terminal,
    with ``textual-image`` installed and the terminal answering for Sixel or kitty graphics;
    :data:`HALFBLOCK` otherwise, with the reason."""
    env = os.environ if env is None else env
    if setting == HALFBLOCK:
        return HALFBLOCK, "images = halfblock"
    if in_multiplexer(env):
        return HALFBLOCK, "inside tmux/screen"
    if not (sys.__stdout__ is not None and sys.__stdout__.isatty() if tty is None else tty):
        return HALFBLOCK, "not a terminal"
    try:
        import textual_image.widget  # noqa: F401  (queries the terminal: before the app starts)
        from textual_image import renderable
    except ImportError:
        return HALFBLOCK, "textual-image is not installed (pip install 'memtui[images]')"
    except Exception as exc:  # a terminal that answers oddly must not stop the console
        return HALFBLOCK, f"textual-image could not query the terminal ({exc.__class__.__name__})"
    if renderable.Image in (renderable.SixelImage, renderable.TGPImage):
        return PIXELS, f"the terminal has {'Sixel' if renderable.Image is renderable.SixelImage else 'kitty graphics'}"
    return HALFBLOCK, "the terminal answered for neither Sixel nor kitty graphics"
