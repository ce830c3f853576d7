"""Help: the keys of the screen it was opened from (and the app's), and what that screen shows."""
from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

APP_KEYS: tuple[tuple[str, str], ...] = (
    ("f1, ?", "this help"), ("ctrl+p", "command palette (every action is there)"),
    ("ctrl+t", "next theme"), ("ctrl+g", "settings"), ("ctrl+q", "quit (runs keep going)"),
)


def help_rows(screen: Screen) -> list[tuple[str, str]]:
    """(keys, description) of the screen's described bindings."""
    return [(", ".join(k.strip() for k in b.key.split(",")), b.description)
            for b in getattr(screen, "BINDINGS", []) if isinstance(b, Binding) and b.description]


def help_renderable(screen: Screen) -> RenderableType:
    """Title, the screen's description, its keys, then the keys that work everywhere."""
    name = type(screen).__name__.removesuffix("Screen")
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for keys, desc in help_rows(screen):
        table.add_row(keys, desc)
    everywhere = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2))
    everywhere.add_column(style="bold")
    everywhere.add_column()
    for keys, desc in APP_KEYS:
        everywhere.add_row(keys, desc)
    return Group(Text(name, style="bold underline"), Text(getattr(screen, "HELP", "") or ""), Text(""),
                 table, Text(""), Text("Everywhere", style="bold underline"), everywhere,
                 Text("\nEscape closes this help.", style="dim"))


class HelpScreen(ModalScreen[None]):
    """Modal help for ``screen``; Escape, F1, ? or q close it."""

    BINDINGS = [Binding("escape,f1,question_mark,q", "close", "Close")]

    def __init__(self, screen: Screen) -> None:
        super().__init__()
        self.rows = help_rows(screen)
        self.body = help_renderable(screen)

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="modal-body"):
            yield Static(self.body, id="help-body")

    def action_close(self) -> None:
        self.dismiss(None)
