"""The New-run screen: a form (name, base, ablated, erased set, reference set, analysis, method,
steps, batch size, precision, then the chosen analysis' own options, from its declaration). F2
checks it, F5 / ctrl+r launch; problems are listed in words. Validation may import the loading
engine (torch), so it runs in a worker thread."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Select, Static

from .. import launch
from .openers import Opener

TEXT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("name", "run name", "letters, digits, . _ -"),
    ("base", "base model", "pipeline folder or cached HF id"),
    ("ablated", "ablated ckpt", "erased checkpoint (optional)"),
    ("erased", "erased set", "dataset folder"),
    ("reference", "reference set", "dataset folder"),
)
SELECTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("analysis", "analysis", launch.analysis_names()),
    ("method", "method", launch.method_names()),
    ("precision", "precision", launch.PRECISIONS),
)
NUMBERS: tuple[tuple[str, str, str], ...] = (("steps", "steps", "50"), ("batch_size", "batch size", "auto"),
                                             ("lora_scale", "LoRA scale", "1"))


OPENER = Opener(key="n", description="New run", hosts=("browse",), order=20)


class Checked(Message):
    """Result of a validation (from the worker)."""

    def __init__(self, problems: list[str], spec: dict[str, Any], name: str, then_launch: bool) -> None:
        super().__init__()
        self.problems = problems
        self.spec = spec
        self.name = name
        self.then_launch = then_launch


class NewRunScreen(Screen):
    """Fill the form, check, launch; the run then opens in the Run screen."""

    @classmethod
    def open_from(cls, host: Any) -> "NewRunScreen":
        return cls()

    HELP = ("Paths may be folders or weight files; a base model may also be the id of a model in "
            "the local Hugging Face cache. Nothing is downloaded. Tab moves between fields.")
    DEFAULT_CSS = "#options { height: auto; }"
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("f2", "check", "Check"),
        Binding("f5,ctrl+r", "launch", "Launch"),
    ]

    def __init__(self, defaults: dict[str, str] | None = None, option_texts: dict[str, str] | None = None,
                 carry: dict[str, Any] | None = None, title: str | None = None, **kwargs: Any) -> None:
        """``defaults``: field texts; ``option_texts``: the analysis options' texts; ``carry``: spec
        fields the form does not show, kept in the spec it launches (a duplicated run's seed, image
        size, inversion table, …); ``title``: the heading."""
        super().__init__(**kwargs)
        self.defaults = defaults
        self.option_texts = dict(option_texts or {})
        self.carry = dict(carry or {})
        self.heading = title

    def compose(self) -> ComposeResult:
        cfg = self.app.cfg
        if self.defaults is None:
            # nothing configured yet: offer the built-in demo world
            unconfigured = not cfg.checkpoint_roots and not cfg.dataset_roots
            self.defaults = launch.demo_defaults() if unconfigured else {}
        yield Static(self.heading or ("New run" + (" — the built-in demo world (concept 'circle' erased)"
                                                    if self.defaults.get("name", "").startswith("demo") else "")),
                     classes="title-line")
        runs_dir = cfg.runs_path
        d = dict(self.defaults)
        if (runs_dir / d.get("name", "")).exists() and d.get("name"):
            d.pop("name")
        d.setdefault("name", launch.next_run_name(runs_dir, d.get("analysis", "concept"),
                                                  d.get("method", "ddim")))
        with VerticalScroll(id="form"):
            for fid, label, placeholder in TEXT_FIELDS:
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Input(d.get(fid, ""), placeholder=placeholder, id=f"f-{fid}", compact=True)
            for fid, label, options in SELECTS:
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Select([(o, o) for o in options], value=d.get(fid, options[0]),
                                 allow_blank=False, id=f"f-{fid}", compact=True)
            for fid, label, default in NUMBERS:
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Input(str(d.get(fid, default)), id=f"f-{fid}", compact=True)
            yield Vertical(id="options")
            yield Static(Text(f"runs folder: {runs_dir}", style="dim"), classes="hint")
            yield Static("", id="problems", classes="problems")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one("#f-name", Input).focus()
        await self.show_options(str(self.query_one("#f-analysis", Select).value))

    @on(Select.Changed, "#f-analysis")
    async def analysis_changed(self, event: Select.Changed) -> None:
        await self.show_options(str(event.value))

    async def show_options(self, analysis: str) -> None:
        """One input per declared option of ``analysis`` (empty = its default, shown as the hint)."""
        box = self.query_one("#options", Vertical)
        await box.remove_children()
        rows = []
        for info in launch.option_fields(analysis):
            default = info.default if info.default is not None else ""
            if isinstance(default, (list, tuple)):
                default = " ".join(map(str, default))
            hint = f"{default}" if default != "" else "default"
            if info.choices:
                hint += " (" + " | ".join(map(str, info.choices)) + ")"
            rows.append(Horizontal(Label(info.name.replace("_", " ")),
                                   Input(self.option_texts.get(info.name, ""), placeholder=hint, id=f"o-{info.name}", compact=True,
                                         tooltip=info.help), classes="field"))
        if rows:
            await box.mount(*rows)

    def option_values(self) -> dict[str, str]:
        """The analysis options' current texts (option name -> text)."""
        return {w.id.removeprefix("o-"): w.value for w in self.query("#options Input").results(Input)
                if w.id}

    def values(self) -> dict[str, str]:
        """The form's current values as text."""
        out: dict[str, str] = {}
        for fid, _, _ in TEXT_FIELDS + NUMBERS:
            out[fid] = self.query_one(f"#f-{fid}", Input).value.strip()
        for fid, _, _ in SELECTS:
            out[fid] = str(self.query_one(f"#f-{fid}", Select).value)
        return out

    def set_problems(self, problems: list[str], ok_text: str = "") -> None:
        widget = self.query_one("#problems", Static)
        if problems:
            text = Text()
            for p in problems:
                text.append("✗ ", style="bold")
                text.append(p + "\n")
            widget.update(text)
            self.call_after_refresh(widget.scroll_visible)
        else:
            widget.update(Text(ok_text, style="green"))

    # ------------------------------------------------------------------------------ actions
    def action_check(self) -> None:
        self.run_check(False)

    def action_launch(self) -> None:
        self.run_check(True)

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.run_check(False)

    def run_check(self, then_launch: bool) -> None:
        values = self.values()
        self.set_problems([], "checking…")
        spec = launch.spec_from_form(values, self.option_values())
        if self.carry:
            options = {**(self.carry.get("options") or {}), **(spec.get("options") or {})}
            spec = {**self.carry, **spec, **({"options": options} if options else {})}
        self.validate_worker(spec, values["name"], then_launch)

    @work(thread=True, exclusive=True, exit_on_error=False, group="validate")
    def validate_worker(self, spec: dict[str, Any], name: str, then_launch: bool) -> None:
        problems = launch.validate(spec, name, self.app.cfg.runs_path)
        self.post_message(Checked(problems, spec, name, then_launch))

    @on(Checked)
    def checked(self, msg: Checked) -> None:
        if msg.problems:
            self.set_problems(msg.problems)
            self.notify(f"{len(msg.problems)} problem(s): see the form", severity="error", timeout=3)
            return
        if not msg.then_launch:
            self.set_problems([], "✓ ready to launch (F5)")
            return
        try:
            run_dir = launch.launch(msg.spec, self.app.cfg.runs_path, msg.name)
        except OSError as exc:
            self.set_problems([f"Could not start the run: {exc}"])
            return
        self.app.log_message(f"launched {msg.name} in {run_dir}")  # type: ignore[attr-defined]
        self.app.open_run(run_dir, replace=True)  # type: ignore[attr-defined]
