"""The engine (and the headless batch path) never import Textual or the console."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

UI_PREFIXES = ("textual", "textual_plotext", "rich_pixels", "memtui.app", "memtui.screens", "memtui.widgets")


def _modules_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["memtui.engine", "memtui.engine.model.pipeline", "memtui.engine.testkit",
                                    "memtui.cli", "memtui.batch"])
def test_engine_imports_no_ui(module: str) -> None:
    mods = _modules_after(f"import {module}")
    leaked = [m for m in mods if m.startswith(UI_PREFIXES)]
    assert module in mods
    assert not leaked, f"{module} pulled in UI modules: {leaked}"


def test_batch_run_path_imports_no_ui(tmp_path) -> None:
    """The whole ``--batch`` path (parse, spec, run directory, analysis dispatch) stays headless."""
    code = ("from memtui.cli import main\n"
            "import memtui.engine.analyses as a\n"
            "a.get_analysis('concept')\n"
            f"main(['--batch', '--out', {str(tmp_path / 'run')!r}, '--base', 'x', '--erased', 'y'])")
    mods = _modules_after(code)
    assert "memtui.batch" in mods and "memtui.engine.compute.concept" in mods
    leaked = [m for m in mods if m.startswith(UI_PREFIXES)]
    assert not leaked, f"memtui --batch pulled in UI modules: {leaked}"
