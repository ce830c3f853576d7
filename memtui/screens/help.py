"""Help: the keys of the screen it was opened from (and the app's), and what that screen shows."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Markdown

APP_KEYS = ("Everywhere: `F1`/`?` help · `ctrl+p` command palette (every action is there) · "
            "`ctrl+t` theme · `ctrl+g` settings · `ctrl+q` quit. Runs keep going after you quit.")


def key_label(key: str) -> str:
    return ", ".join(k.strip() for k in key.split(","))


def help_markdown(screen: Screen) -> str:
    """Markdown: the screen's description and a table of its bindings."""
    name = type(screen).__name__.removesuffix("Screen")
    lines = [f"# {name}", "", getattr(screen, "HELP", "") or "", "", "| key | action |", "|---|---|"]
    for b in getattr(screen, "BINDINGS", []):
        if isinstance(b, Binding) and b.description:
            lines.append(f"| `{key_label(b.key)}` | {b.description} |")
    lines += ["", APP_KEYS]
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    """Modal help for ``screen``; Escape, F1, ? or q close it."""

    BINDINGS = [Binding("escape,f1,question_mark,q", "dismiss", "Close")]

    def __init__(self, screen: Screen) -> None:
        super().__init__()
        self.text = help_markdown(screen)

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="modal-body"):
            yield Markdown(self.text)

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)
