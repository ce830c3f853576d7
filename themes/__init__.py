"""memtui's look: the app's Textual CSS (``memtui.tcss``) and its own themes as Textual ``Theme``
objects (registered with the app; the chosen one persists in the config)."""
from __future__ import annotations

from importlib.resources import files

from textual.theme import Theme

MEMTUI_DARK = Theme(
    name="memtui",
    primary="#5fafd7",      # xterm-256 74: stays distinct when downsampled
    secondary="#af87d7",    # 140
    accent="#ffaf5f",       # 215
    warning="#ffd75f",      # 221
    error="#ff5f5f",        # 203
    success="#87d787",      # 114
    foreground="#e4e4e4",   # 254
    background="#1c1c1c",   # 234
    surface="#262626",      # 235
    panel="#303030",        # 236
    dark=True,
)

MEMTUI_LIGHT = Theme(
    name="memtui-light",
    primary="#005f87",
    secondary="#5f5faf",
    accent="#af5f00",
    warning="#875f00",
    error="#af0000",
    success="#005f00",
    foreground="#1c1c1c",
    background="#eeeeee",
    surface="#e4e4e4",
    panel="#d0d0d0",
    dark=False,
)

THEMES: tuple[Theme, ...] = (MEMTUI_DARK, MEMTUI_LIGHT)


def css_path() -> str:
    """Filesystem path of the app stylesheet ``memtui.tcss`` (shipped as package data)."""
    return str(files(__name__) / "memtui.tcss")
