"""The sweep file: parsing, validation before anything runs (every bad field named, with its
line), cell expansion (product and explicit cells), stable folder-safe names. Torch-free."""
from __future__ import annotations

from pathlib import Path

import pytest

from memtui.engine.runs.executors import executor_names, get_executor
from memtui.engine.runs.sweep import SweepError, load_sweep, parse_sweep

GRID = """\
name = "grid"
methods = ["ddim", "fpi"]
analyses = ["concept"]

[spec]
steps = 3
max_items = 2
device = "cpu"

[[base]]
name = "sd"
path = "{base}"

[[checkpoint]]
name = "esd-church"
path = "{ckpt}"
concept = "church"
erasure = "esd"

[[checkpoint]]
name = "orig"
concept = "church"

[concept.church]
erased = "erased"
reference = "coco"
"""


@pytest.fixture()
def world(tmp_path: Path) -> dict[str, Path]:
    for d in ("base", "erased", "coco"):
        (tmp_path / d).mkdir()
    (tmp_path / "ck.pt").write_bytes(b"x")
    return {"root": tmp_path, "base": tmp_path / "base", "ckpt": tmp_path / "ck.pt"}


def grid(world: dict[str, Path], **subs: str) -> str:
    text = GRID.format(base=world["base"], ckpt=world["ckpt"])
    for old, new in subs.items():
        assert old in text
        text = text.replace(old, new)
    return text


def test_product_cells_names_and_specs(world) -> None:
    p = world["root"] / "sweep.toml"
    p.write_text(grid(world))
    sw = load_sweep(p)
    assert [c.name for c in sw.cells] == ["esd-church__church__ddim__concept", "esd-church__church__fpi__concept",
                                         "orig__church__ddim__concept", "orig__church__fpi__concept"]
    first = sw.cells[0].spec
    assert (first.steps, first.max_items, first.device, first.method) == (3, 2, "cpu", "ddim")
    assert first.ablated == str(world["ckpt"].resolve()) and sw.cells[2].spec.ablated is None
    assert first.erased == str((world["root"] / "erased").resolve())  # relative to the sweep file
    assert sw.cells[0].erasure == "esd" and sw.grid["combinations"] == "product"
    assert load_sweep(p).cells[3].name == sw.cells[3].name  # stable


def test_explicit_cells_and_two_bases(world) -> None:
    text = grid(world) + f"""
[[base]]
name = "sd2"
path = "{world['base']}"

[[cell]]
base = "sd2"
checkpoint = "orig"
method = "fpi"
spec = {{ seed = 7 }}
"""
    sw = parse_sweep(text, root=world["root"])
    assert [c.name for c in sw.cells] == ["sd2__orig__church__fpi__concept"]
    assert sw.cells[0].spec.seed == 7 and sw.grid["combinations"] == "cells"


@pytest.mark.parametrize("subs, needle", [
    ({"steps = 3": "stepz = 3"}, "[spec] unknown field 'stepz' (line 6)"),
    ({"max_items = 2": "max_items = -1"}, "max_items must be a positive integer or unset, got -1 (line 7)"),
    ({'"ddim", "fpi"': '"ddim", "magic"'}, "method must be one of"),
    ({'concept = "church"\nerasure': 'concept = "tower"\nerasure'}, "concept must name a [concept.<name>] table"),
    ({'device = "cpu"': 'method = "ddim"'}, "[spec] field 'method' (line 8) is set by the grid"),
    ({'name = "orig"': 'name = "a b"'}, "name must be letters"),
    ({'methods = [': 'methodz = ['}, "unknown key 'methodz' (line 2)"),
    ({"[spec]": '[slurm]\npartitio = "gpu"\n\n[spec]'}, "[slurm] unknown option 'partitio'; known: partition, "),
    ({"[spec]": '[slurm]\ntimeout_min = "1h"\n\n[spec]'}, "[slurm] timeout_min must be int, got '1h' (line 6)"),
    ({'analyses = ["concept"]': 'analyses = ["concept"]\nexecutor = "pbs"'}, "executor must be one of local, slurm"),
])
def test_bad_fields_are_named(world, subs, needle) -> None:
    with pytest.raises(SweepError) as e:
        parse_sweep(grid(world, **subs), root=world["root"])
    assert needle in str(e.value)


def test_toml_syntax_error_gives_the_line(world) -> None:
    with pytest.raises(SweepError) as e:
        parse_sweep(grid(world, **{'steps = 3': 'steps = '}), root=world["root"])
    assert "line 6" in str(e.value)


def test_executor_options_are_kept_per_executor(world) -> None:
    text = grid(world, **{"[spec]": 'executor = "slurm"\n[slurm]\npartition = "gpu"\nmem_gb = 32\n'
                                     'additional = { account = "lab" }\n\n[spec]'})
    sw = parse_sweep(text, root=world["root"])
    assert sw.executor == "slurm"
    assert sw.executor_options == {"slurm": {"partition": "gpu", "mem_gb": 32, "additional": {"account": "lab"}}}
    ex = get_executor("slurm")(workers=2, options=sw.executor_options["slurm"])
    assert ex.describe() == [{"id": "slurm", "array_parallelism": 2, "partition": "gpu", "mem_gb": 32,
                              "additional": {"account": "lab"}}]


def test_executor_registry() -> None:
    assert executor_names() == ("local", "slurm")
    assert get_executor("local")(workers=3).describe()[2]["id"] == 2
    with pytest.raises(ValueError, match="unknown executor 'nope'"):
        get_executor("nope")
