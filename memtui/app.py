"""memtui's console: a Textual app to browse checkpoints, datasets and runs, launch runs and watch
them live. It computes no science: it reads run directories and starts ``memtui --batch``
subprocesses (``memtui.jobs``). Engine modules that import torch are imported lazily in workers."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.screen import Screen

from memtui.themes import THEMES, css_path

from .config import Config, apply_overrides, load_config, save_config
from .widgets.log_pane import AppLogHandler

log = logging.getLogger("memtui")


class ScreenActions(Provider):
    """Palette entries for every described binding of the current screen ("run: Sort", ...)."""

    def commands(self) -> list[tuple[str, str, Any]]:
        screen = self.screen
        prefix = type(screen).__name__.removesuffix("Screen").lower() or "screen"
        out = []
        for b in getattr(screen, "BINDINGS", []):
            if isinstance(b, Binding) and b.description and b.action not in ("app.pop_screen",):
                out.append((f"{prefix}: {b.description}", f"key {b.key.split(',')[0]}",
                            partial(screen.run_action, b.action)))
        return out

    async def discover(self) -> Hits:
        for text, help_text, cb in self.commands():
            yield Hit(1.0, text, cb, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, cb in self.commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), cb, help=help_text)


class MemtuiApp(App[int]):
    """The console. ``config`` is the effective config (file + one-launch overrides); ``gpu``
    turns the NVML line on; ``show_eta`` shows the progress bars' ETA (off in tests); ``graphics``:
    ``halfblock`` or ``pixels``, chosen before the app starts (``memtui.widgets.graphics``)."""

    TITLE = "memtui"
    CSS_PATH = css_path()
    COMMANDS = App.COMMANDS | {ScreenActions}
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("ctrl+g", "settings", "Settings"),
        Binding("ctrl+t", "cycle_theme", "Theme", show=False),
    ]

    def __init__(self, config: Config | None = None, gpu: bool = True, show_eta: bool = True,
                 config_file: Path | None = None, runs_override: str | None = None,
                 graphics: str = "halfblock", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.graphics = graphics  # how the item view draws images (memtui.widgets.graphics)
        self.config_file = config_file
        self.runs_override = runs_override
        self.cfg = config if config is not None else load_config(config_file)
        self.gpu = gpu
        self.show_eta = show_eta
        for theme in THEMES:
            self.register_theme(theme)
        self.theme = self.cfg.theme if self.cfg.theme in self.available_themes else "memtui"
        self.messages: list[str] = []

    def on_mount(self) -> None:
        from .screens.browse import BrowseScreen

        self.theme_changed_signal.subscribe(self, self._persist_theme)
        handler = AppLogHandler(self)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        self.push_screen(BrowseScreen())

    # ------------------------------------------------------------------------------ config
    def _persist_theme(self, theme: Any) -> None:
        name = getattr(theme, "name", str(theme))
        if name == self.cfg.theme:
            return
        self.cfg.theme = name
        try:
            on_disk = load_config(self.config_file)
            on_disk.theme = name
            save_config(on_disk, self.config_file)
        except (OSError, ValueError) as exc:
            self.notify(f"could not save the theme: {exc}", severity="error")

    def save_settings(self, cfg: Config) -> None:
        """Persist edited settings and apply them to this session."""
        save_config(cfg, self.config_file)
        self.cfg = apply_overrides(cfg, runs=self.runs_override)
        if cfg.theme in self.available_themes:
            self.theme = cfg.theme

    def log_message(self, text: str) -> None:
        """Record a console message (shown in the Browse screen's log)."""
        self.messages.append(text)
        for pane in self.query("#app-log"):
            pane.add_lines([text])  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------ actions
    def open_run(self, run_dir: Path, initial_tab: str = "preview", replace: bool = False) -> None:
        """Show the Run screen of ``run_dir`` (``replace``: instead of the current screen). Screens
        open a run through here, so none of them imports the Run screen's module."""
        from .screens.run import RunScreen

        screen = RunScreen(Path(run_dir), initial_tab=initial_tab)
        if replace:
            self.switch_screen(screen)
        else:
            self.push_screen(screen)

    def action_help(self) -> None:
        from .screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.screen))

    def action_settings(self) -> None:
        from .screens.settings import SettingsScreen

        if not isinstance(self.screen, SettingsScreen):
            self.push_screen(SettingsScreen(self.cfg))

    def action_cycle_theme(self) -> None:
        names = [t.name for t in THEMES] + ["textual-dark", "textual-light", "nord", "gruvbox",
                                            "ansi-dark"]
        i = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(i + 1) % len(names)]
        self.notify(f"theme: {self.theme}", timeout=2)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help", "Keys of this screen (F1)", self.action_help)
        yield SystemCommand("Settings", "Checkpoint and dataset roots, runs folder, theme (ctrl+g)",
                            self.action_settings)
        yield SystemCommand("Next theme", "Cycle the colour theme (ctrl+t)", self.action_cycle_theme)


def run_app(args: Any) -> int:
    """Entry from ``memtui`` (no ``--batch``): reads ``args.runs``, ``args.no_mouse``,
    ``args.config`` (all optional). Returns the exit code."""
    import sys

    config_file = getattr(args, "config", None)
    config_file = Path(config_file).expanduser() if config_file else None
    try:
        cfg = load_config(config_file)
    except ValueError as exc:
        print(f"memtui: {exc}", file=sys.stderr)
        return 2
    runs = getattr(args, "runs", None)
    from .widgets.graphics import choose_graphics

    graphics, why = choose_graphics(getattr(args, "images", None) or cfg.images)  # before Textual starts
    app = MemtuiApp(config=apply_overrides(cfg, runs=runs), config_file=config_file, runs_override=runs,
                    graphics=graphics)
    app.messages.append(f"images: {graphics} ({why})")
    code = app.run(mouse=not getattr(args, "no_mouse", False))
    return int(code or 0)
