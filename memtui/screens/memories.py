"""The Memories view of a memories run (issue 6): targets on the left; for the highlighted target,
its query beside its reconstruction, a grid of its memories' reconstructions, the histogram of the
memories' distances to the target's seed, and the memories' NLL against the N(0, I) law."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from memtui.engine.runs.store import RunDir
from memtui.engine.runs.view import RunView

from .. import jobs
from ..widgets.histogram import Histogram
from ..widgets.preview import PreviewPair, image_grid
from ..widgets.summary import fmt
from ..widgets.tables import sync_table
from .openers import Opener

DIST_KEYS = ("distance_to_target", "dist_to_target", "euclidean_to_target", "target_distance", "distance")


def memory_distance(rec: dict[str, Any]) -> float | None:
    """A memory record's Euclidean distance to its target's seed (whichever key the run wrote)."""
    for k in DIST_KEYS:
        if isinstance(rec.get(k), (int, float)):
            return float(rec[k])
    return None


OPENER = Opener(key="m", description="Memories", hosts=("browse", "run"), show=("run",), order=40)


class MemoriesScreen(Screen):
    """Targets and their memories."""

    @classmethod
    def open_from(cls, host: Any) -> "MemoriesScreen | None":
        run = host.selected_run()
        return cls(run.path) if run is not None else None

    HELP = ("Each target image of the erased set has N memories: seeds found by inverting from "
            "other images' latents toward the target. Their reconstructions should all look like "
            "the target, and their NLLs should lie under the N(0, I) law.")
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("1", "tab('grid')", "Memories"),
        Binding("2", "tab('dist')", "Distances"),
        Binding("3", "tab('mnll')", "NLL"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self, run_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = Path(run_dir)
        self.records: dict[str, dict[str, Any]] = {}
        self.law: tuple[float, float] | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"Memories · {self.run_dir.name}", classes="title-line")
        with Horizontal(id="run-main"):
            yield DataTable(id="targets", cursor_type="row", zebra_stripes=True)
            with TabbedContent(initial="grid", id="memories-side"):
                with TabPane("Memories", id="grid"):
                    with VerticalScroll():
                        yield PreviewPair(width_px=16, id="target-pair")
                        yield Static("", id="memory-grid")
                with TabPane("Distances", id="dist"):
                    yield Histogram("memory ↔ target seed distance", "distance", id="dist-hist")
                with TabPane("NLL", id="mnll"):
                    yield Histogram("NLL of memory seeds (nats)", "NLL", id="mem-nll-hist")
        yield Footer()

    def on_mount(self) -> None:
        self.action_reload()

    def memories_of(self, target_id: str) -> list[dict[str, Any]]:
        return [r for r in self.records.values()
                if r.get("set") == "memory" and str(r.get("target_id")) == target_id]

    def action_reload(self) -> None:
        self.records = RunDir(self.run_dir).read_results()
        self.law = RunView.open(self.run_dir).nll_law()
        t = self.query_one("#targets", DataTable)
        rows = []
        for rec in self.records.values():
            if rec.get("set") != "target":
                continue
            tid = str(rec["item_id"])
            mems = self.memories_of(tid)
            psnrs = [m["psnr"] for m in mems if isinstance(m.get("psnr"), (int, float))]
            mean = sum(psnrs) / len(psnrs) if psnrs else None
            rows.append((tid, (tid, str(len(mems)), fmt(mean), str(rec.get("prompt", "")))))
        sync_table(t, rows, (("id", "target"), ("n", "mem."), ("psnr", "PSNR"), ("prompt", "prompt")))
        if t.row_count == 0:
            self.query_one("#memory-grid", Static).update(
                Text("no targets in this run (is it a memories run?)", style="dim"))
        self.show_target()

    @on(DataTable.RowHighlighted, "#targets")
    def highlighted(self, _: DataTable.RowHighlighted) -> None:
        self.show_target()

    def show_target(self) -> None:
        t = self.query_one("#targets", DataTable)
        if t.row_count == 0:
            return
        tid = str(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)
        images = self.run_dir / "images"
        target = self.records.get(tid, {})
        self.query_one("#target-pair", PreviewPair).show_item(
            tid, images / f"{tid}.query.png", images / f"{tid}.recon.png", str(target.get("prompt", "")))
        mems = self.memories_of(tid)
        items = []
        for m in mems:
            mid = str(m["item_id"])
            short = mid[len(tid):].lstrip("-_.") if mid.startswith(tid) else mid
            items.append((f"{short or mid} {fmt(m.get('psnr'))}dB", images / f"{mid}.recon.png"))
        grid = image_grid(items, width=12, columns=4) if items else Text("no memories yet", style="dim")
        self.query_one("#memory-grid", Static).update(Group(Text("memories (reconstructions)", style="bold"), grid))
        dists = [d for d in (memory_distance(m) for m in mems) if d is not None]
        self.query_one("#dist-hist", Histogram).set_data({"memories": dists})
        controls = [r.get("nll") for r in self.records.values() if r.get("set") == "control"]
        law = (self.law[0], self.law[1], "N(0,I) law") if self.law else None
        self.query_one("#mem-nll-hist", Histogram).set_data(
            {"memories": [m.get("nll") for m in mems], "control": controls}, law=law)

    def action_tab(self, tab: str) -> None:
        self.query_one("#memories-side", TabbedContent).active = tab
