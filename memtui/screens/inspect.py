"""Inspect modal: a checkpoint's load report, a dataset's first images, a run's spec and summary."""
from __future__ import annotations

import json
from typing import Any

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from .. import catalog
from ..widgets.preview import image_grid
from ..widgets.summary import summary_renderable
from .openers import Opener


OPENER = Opener(key="i", description="Inspect", hosts=("browse",), order=10)


class InspectScreen(ModalScreen[None]):
    """Details of one Browse entry; Escape closes."""

    @classmethod
    def open_from(cls, host: Any) -> "InspectScreen | None":
        """The entry under the host's cursor (a run, checkpoint or dataset)."""
        entry = host.current_entry()
        if entry is None:
            host.notify("nothing selected", severity="warning")
            return None
        kind = {"runs": "run", "checkpoints": "checkpoint", "datasets": "dataset"}[host.current_tab()]
        return cls(kind, entry)

    BINDINGS = [Binding("escape,q,i", "close", "Close")]

    def __init__(self, kind: str, entry: Any) -> None:
        super().__init__()
        self.kind = kind
        self.entry = entry

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="modal-body"):
            yield Static(Text(f"{self.kind}: {self.entry.name}", style="bold"), id="inspect-title")
            yield Static(Text("inspecting…", style="dim"), id="inspect-body")

    def on_mount(self) -> None:
        body = self.query_one("#inspect-body", Static)
        if self.kind == "dataset":
            images = self.entry.extra.get("images") or catalog.dataset_layout(self.entry.path)[1]
            head = Text(f"{self.entry.path}\nlayout: {self.entry.kind} · {len(images)} images\n")
            grid = image_grid([(p.name, p) for p in images[:6]], width=16, columns=3)
            body.update(Group(head, grid))
        elif self.kind == "run":
            spec = json.dumps(self.entry.spec, indent=1, sort_keys=True) if self.entry.spec else "(no spec)"
            body.update(Group(Text(f"{self.entry.path}\nstatus: {self.entry.status} · "
                                   f"{self.entry.progress_text()} items\n\nspec:\n{spec}\n"),
                              summary_renderable(self.entry.summary)))
        else:
            self.load_report()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load_report(self) -> None:
        text = catalog.checkpoint_report(self.entry.path)
        self.app.call_from_thread(self.query_one("#inspect-body", Static).update, Text(text))

    def action_close(self) -> None:
        self.dismiss(None)
