"""Settings modal: edit the config file (checkpoint roots, dataset roots, runs folder, theme)."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from ..config import Config, config_path, load_config


def split_paths(text: str) -> list[str]:
    """Folders separated by ';' or ',' (surrounding blanks dropped)."""
    return [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]


class SettingsScreen(ModalScreen[None]):
    """Edits are saved with ctrl+r (or Enter in a field); Escape discards."""

    HELP = "Folders are separated by commas. Saved to the config file shown at the top."
    BINDINGS = [Binding("escape", "close", "Discard"), Binding("ctrl+r", "save", "Save")]

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        try:
            self.cfg = load_config(getattr(cfg, "path", None))
        except ValueError:
            self.cfg = cfg

    def compose(self) -> ComposeResult:
        c = self.cfg
        with VerticalScroll(classes="modal-body"):
            yield Static(f"Settings — {c.path or config_path()}", classes="title-line")
            for fid, label, value in (
                ("checkpoint_roots", "checkpoints", ", ".join(c.checkpoint_roots)),
                ("dataset_roots", "datasets", ", ".join(c.dataset_roots)),
                ("runs_dir", "runs folder", c.runs_dir),
                ("theme", "theme", self.app.theme),
            ):
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Input(value, id=fid, compact=True, placeholder=str(c.runs_path) if fid == "runs_dir" else
                                "folders, separated by commas" if fid.endswith("roots") else "")
            yield Static("ctrl+r or Enter saves · Escape discards", classes="hint")
            yield Static("", id="settings-problems", classes="problems")

    def on_mount(self) -> None:
        self.query_one("#checkpoint_roots", Input).focus()

    def on_input_submitted(self) -> None:
        self.action_save()

    def action_save(self) -> None:
        get = lambda fid: self.query_one(f"#{fid}", Input).value.strip()  # noqa: E731
        theme = get("theme")
        if theme not in self.app.available_themes:
            self.query_one("#settings-problems", Static).update(
                f"unknown theme {theme!r}; available: {', '.join(sorted(self.app.available_themes))}")
            return
        new = Config(checkpoint_roots=split_paths(get("checkpoint_roots")),
                     dataset_roots=split_paths(get("dataset_roots")), runs_dir=get("runs_dir"),
                     theme=theme, path=self.cfg.path)
        self.app.save_settings(new)  # type: ignore[attr-defined]
        self.notify("settings saved")
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
