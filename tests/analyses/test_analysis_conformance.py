"""Every registered analysis, checked the same way: its declaration is complete and valid, and the
CLI flags, ``--help``, spec validation, the New-run form fields, the batch table and the headline all
come from it. A dummy analysis registered at run time shows that adding one needs no other edit."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from memtui.engine import analyses
from memtui.engine.analyses.base import Analysis, CommonOptions, Table
from memtui.engine.core import options as opt
from memtui.engine.runs.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]
NAMES = analyses.names()


def test_shipped_analyses_are_registered() -> None:
    assert NAMES[:5] == ("concept", "memories", "scramble", "generate", "prompt_test")
    assert analyses.main_names() == ("concept", "memories", "scramble", "generate")


def test_registry_and_declarations_import_no_torch() -> None:
    code = ("import sys, memtui.engine.analyses as a; [x.option_infos() for x in a.all_analyses()]; "
            "import memtui.engine.runs.spec, memtui.engine.runs.view; "
            "print([m for m in ('torch', 'diffusers', 'textual') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", NAMES)
def test_declaration_is_complete(name: str) -> None:
    a = analyses.get(name)
    assert a.name == name and a.question and a.compute.count(":") == 1
    assert set(a.datasets) <= {"erased", "reference"}
    for key in ("item_id", "set", "status"):
        assert a.follow_up or key in a.record_keys
    # the defaults are valid options and round-trip through from_dict / to_dict
    defaults = opt.to_dict(a.Options())
    assert opt.problems(a.Options, defaults) == []
    assert opt.to_dict(opt.from_dict(a.Options, defaults)) == defaults
    flags = [i.flag for i in a.option_infos() if i.flag]
    assert len(flags) == len(set(flags))
    assert a.headline({}) == "-"


@pytest.mark.parametrize("name", [n for n in NAMES if not analyses.get(n).follow_up])
def test_compute_entry_point_resolves(name: str) -> None:
    fn = analyses.get(name).compute_function()
    assert callable(fn) and fn.__name__ == f"run_{name}"


@pytest.mark.parametrize("name", NAMES)
def test_every_flag_is_in_help_and_lands_in_spec_options(name: str, capsys) -> None:
    from memtui.batch import spec_from_args
    from memtui.cli import build_parser, main

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    a = analyses.get(name)
    assert f"\n{a.name} (" in text  # its own --help section
    parser = build_parser()
    for info in a.option_infos():
        if not info.flag:
            continue
        assert info.flag in text
        value = _sample_value(info)
        argv = [info.flag, *([str(v) for v in value] if isinstance(value, list) else [str(value)])]
        ns = parser.parse_args(["--batch", "--out", "/nonexistent/x", *argv])
        assert opt.given_flags(ns, a.Options) == {info.name: value}
    if a.switch:
        ns = parser.parse_args(["--batch", "--out", "/nonexistent/x", a.switch, "--base", "b"])
        with pytest.raises(Exception, match="options.prompts is required"):
            spec_from_args(ns)


def _sample_value(info: opt.OptionInfo):
    if info.choices:
        return info.choices[-1]
    one = {int: 3, float: 0.5, str: "x"}[info.kind]
    if info.many == "+":
        return [one, one]
    if isinstance(info.many, int):
        return [one] * info.many
    return one


@pytest.mark.parametrize("name", [n for n in NAMES if analyses.get(n).option_infos()])
def test_bad_option_is_a_clear_spec_error(name: str, tmp_path) -> None:
    a = analyses.get(name)
    info = a.option_infos()[-1]
    bad = "not-a-number" if info.kind in (int, float) else 12345
    main = a.name if not a.follow_up else "concept"
    spec = RunSpec.from_dict({"analysis": main, "base": "b", "demo": True, "options": {info.name: bad}},
                             validate=False)
    probs = spec.problems()
    assert any(f"options.{info.name}" in p for p in probs), probs
    with pytest.raises(ValueError, match=f"options.{info.name}"):
        a.options(spec)


def test_option_of_another_analysis_is_named() -> None:
    spec = RunSpec.from_dict({"analysis": "scramble", "base": "b", "demo": True, "options": {"num_supports": 3}},
                             validate=False)
    assert "options not used by the scramble analysis: options.num_supports (an option of memories)" in spec.problems()


def test_demo_defaults_apply_only_on_the_demo_world() -> None:
    from memtui.engine.analyses.memories import MemoriesOptions

    plain = RunSpec.from_dict({"analysis": "memories", "base": "b"}, validate=False)
    demo = RunSpec.from_dict({"analysis": "memories", "base": "b", "demo": True, "options": {"vae_lr": 0.5}},
                             validate=False)
    assert analyses.get("memories").options(plain) == MemoriesOptions()
    o = analyses.get("memories").options(demo)
    assert (o.vae_steps, o.num_supports, o.vae_lr, o.sib_path) == (150, 10, 0.5, "direct")


def test_form_fields_are_the_declared_options() -> None:
    from memtui import launch

    for name in launch.analysis_names():
        assert [i.name for i in launch.option_fields(name)] == [i.name for i in analyses.get(name).option_infos()]
    spec = launch.spec_from_form({"analysis": "memories", "method": "ddim", "steps": "5"},
                                 {"num_supports": "3", "loss_weights": "1, 0, 0", "sib_path": ""})
    assert spec["options"] == {"num_supports": 3, "loss_weights": [1.0, 0.0, 0.0]}


@pytest.mark.parametrize("name,summary,expected", [
    ("concept", {"sets": {"erased": {"psnr": {"mean": 26.814}}}, "relative_distance": 1.114}, "PSNR 26.81 dB  RD 1.11"),
    ("memories", {"average": {"memory_psnr": {"mean": 25.258}, "cv": {"mean": 0.2109}, "cv_pairwise": {"mean": 0.35}}},
     "mem. PSNR 25.26 dB  CV 0.211"),
    ("memories", {"average": {"memory_psnr": {"mean": 25.258}, "cv": {"mean": 0.35}}},  # before cv_pairwise: cv was pairwise
     "mem. PSNR 25.26 dB  CV pairwise 0.350"),
    ("scramble", {"nll_increase": {"mean": 32.37}}, "NLL +32.4 scrambled"),
    ("generate", {"n_ok": 3, "n_items": 4}, "3/4 images"),
])
def test_headline_and_table_from_the_declaration(name, summary, expected) -> None:
    a = analyses.get(name)
    assert a.headline(summary) == expected
    t = a.table({"analysis": name, **summary}, "RUN")
    assert isinstance(t, Table) and "RUN" in t.title


@dataclass
class _EchoOptions(CommonOptions):
    """A dummy analysis' options."""

    loudness: int = opt.option(3, help="how loud the echo is", minimum=1, metavar="N")
    tone: str = opt.option("low", help="echo tone", choices=("low", "high"))


def test_a_new_analysis_needs_no_other_edit(tmp_path) -> None:
    """Register an analysis at run time: CLI flags, --help, spec validation, the form and the
    batch table pick it up without any other change."""

    class Echo(Analysis):
        name = "echo"
        question = "Say it back"
        Options = _EchoOptions
        compute = "memtui.engine.compute.concept:run_concept"
        datasets = ("erased",)

        @classmethod
        def table(cls, summary, run_dir):
            return Table(title=f"echo · {run_dir}", columns=["what", "value"], rows=[["loud", str(summary["loud"])]])

    analyses.register(Echo)
    try:
        _check_echo(tmp_path)
    finally:
        analyses.unregister("echo")
    assert "echo" not in analyses.names()


def _check_echo(tmp_path) -> None:
    from memtui import launch
    from memtui.batch import print_table, spec_from_args
    from memtui.cli import build_parser

    assert "echo" in analyses.main_names() and "echo" in launch.analysis_names()
    parser = build_parser()
    help_text = parser.format_help()
    assert "echo (with --analysis echo)" in help_text and "--loudness N" in help_text
    data = tmp_path / "d"
    data.mkdir()
    ns = parser.parse_args(["--batch", "--out", str(tmp_path / "r"), "--analysis", "echo", "--base", "b",
                            "--erased", str(data), "--loudness", "7", "--tone", "high"])
    spec = spec_from_args(ns)
    assert spec.analysis == "echo" and spec.options == {"loudness": 7, "tone": "high"}
    bad = parser.parse_args(["--batch", "--out", str(tmp_path / "r"), "--analysis", "echo", "--base", "b",
                             "--erased", str(data), "--loudness", "0"])
    with pytest.raises(ValueError, match="options.loudness must be >= 1"):
        spec_from_args(bad)
    assert [i.name for i in launch.option_fields("echo")] == ["concept", "loudness", "tone"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_table({"analysis": "echo", "loud": 7}, Path("RUN"))
    assert "echo · RUN" in out.getvalue() and "loud" in out.getvalue() and "7" in out.getvalue()


def test_docs_are_generated_from_the_registries() -> None:
    from memtui.reference import SCHEMA_BEGIN, SCHEMA_END, options_markdown, schema_markdown

    assert (ROOT / "docs" / "options.md").read_text(encoding="utf-8") == options_markdown(), \
        "docs/options.md is stale: run `python -m memtui.reference > docs/options.md`"
    text = (ROOT / "docs" / "run-format.md").read_text(encoding="utf-8")
    part = text[text.index(SCHEMA_BEGIN): text.index(SCHEMA_END) + len(SCHEMA_END)]
    assert part == schema_markdown(), "docs/run-format.md's schema table is stale: run `python -m memtui.reference --schema`"


def test_spec_json_round_trip_keeps_options() -> None:
    spec = RunSpec.from_dict({"analysis": "memories", "base": "b", "demo": True,
                              "options": {"num_supports": 2, "loss_weights": [1, 0, 0]}})
    again = RunSpec.from_dict(json.loads(spec.to_json()))
    assert again.options == spec.options and again.fingerprint() == spec.fingerprint()
    # follow-up options do not change results: changing them is not a spec mismatch
    other = RunSpec.from_dict({**spec.to_dict(), "options": {**spec.options, "demo_samples": 8}})
    assert spec.differences(other) == {}
