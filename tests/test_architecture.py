"""The house rules, checked: the import-linter contracts in ``pyproject.toml`` (layers that import
only downward, the engine never imports the console, the headless path never imports Textual), no
import cycle between modules, no module importing another module's private name, and packaging
that finds every package and ships every demo weight.

The source tree is not the installed layout (``engine/`` installs as ``memtui.engine`` and
``themes/`` as ``memtui.themes`` through ``[tool.setuptools] package-dir``), and grimp reads
packages from disk, so the checks run over a *view*: the ``.py`` files copied into the installed
layout under a temporary folder. ``python tests/test_architecture.py`` (what
``bash scripts/dev lint`` runs) prints the import-linter report and the cycles by hand.
"""
from __future__ import annotations

import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
ROOT_PACKAGE = "memtui"


# --------------------------------------------------------------------------- the installed layout

def source_files() -> Iterator[tuple[str, Path]]:
    """(module name, source file) of every module of the project, named as installed."""
    # the longest mapping wins: engine/ is memtui.engine even though memtui/ is memtui
    for package, folder in sorted(PACKAGE_DIR.items(), key=lambda kv: -len(kv[0])):
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            if "__pycache__" in rel.parts:
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def build_view(dest: Path) -> Path:
    """Copy the project's modules into ``dest`` in the installed layout; returns ``dest``."""
    for module, path in source_files():
        target = dest.joinpath(*module.split("."))
        target = target / "__init__.py" if path.name == "__init__.py" else target.with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dest


@pytest.fixture(scope="module")
def view(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_view(tmp_path_factory.mktemp("view"))


def lint_imports(view_dir: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with this repo's contracts over ``view_dir`` (its exit status and report)."""
    script = Path(sys.executable).with_name("lint-imports")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c",
                                                  "import sys; from importlinter.cli import lint_imports_command;"
                                                  " sys.exit(lint_imports_command())"]
    env = {**os.environ, "PYTHONPATH": str(view_dir)}
    return subprocess.run([*cmd, str(ROOT / "pyproject.toml"), "--no-cache"], cwd=view_dir,
                          env=env, capture_output=True, text=True, timeout=240)


def import_graph(view_dir: Path):
    """grimp's graph of the view (every import, lazy function-level ones included; imports under
    ``if TYPE_CHECKING:`` are left out: they never run)."""
    import grimp

    sys.path.insert(0, str(view_dir))
    saved = {k: v for k, v in sys.modules.items() if k == ROOT_PACKAGE or k.startswith(ROOT_PACKAGE + ".")}
    for k in saved:
        del sys.modules[k]
    try:
        return grimp.build_graph(ROOT_PACKAGE, cache_dir=None, exclude_type_checking_imports=True)
    finally:
        sys.path.remove(str(view_dir))
        sys.modules.update(saved)


def import_cycles(graph) -> list[list[str]]:
    """The strongly connected components (of more than one module, or a module importing itself)
    of the project's module graph, each sorted, largest first."""
    import networkx as nx

    g = nx.DiGraph()
    for m in graph.modules:
        g.add_node(m)
        for imported in graph.find_modules_directly_imported_by(m):
            g.add_edge(m, imported)
    sccs = [sorted(c) for c in nx.strongly_connected_components(g)
            if len(c) > 1 or g.has_edge(next(iter(c)), next(iter(c)))]
    return sorted(sccs, key=lambda c: (-len(c), c))


def describe_cycle(graph, scc: list[str]) -> str:
    """One SCC in words: its modules and the direct imports inside it (with line numbers)."""
    members = set(scc)
    lines = [f"cycle of {len(scc)} modules:"]
    for m in scc:
        for imported in sorted(graph.find_modules_directly_imported_by(m) & members):
            details = graph.get_import_details(importer=m, imported=imported)
            where = ", ".join(str(d["line_number"]) for d in details)
            lines.append(f"    {m} -> {imported}  (line {where})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- private names

def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports() -> list[str]:
    """Every place a module uses a private name (``_x``, not ``__x__``) of another project module:
    ``from m import _x`` or ``m._x`` where ``m`` names an imported project module. Importing a
    private *module* (``from pkg import _mod``) from inside ``pkg`` is allowed (the
    ``private_modules`` contract checks the rest)."""
    modules = dict(source_files())
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    out = []
    for me, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        my_package = me if me in packages else me.rpartition(".")[0]
        rel = path.relative_to(ROOT)
        aliases: dict[str, str] = {}  # local name -> project module it is bound to

        def is_module(name: str) -> bool:
            return name in modules

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == ROOT_PACKAGE:
                        if a.asname:
                            aliases[a.asname] = a.name
                        else:
                            aliases[ROOT_PACKAGE] = ROOT_PACKAGE
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    base = my_package.split(".")[: len(my_package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([source] if source else []))
                if source.split(".")[0] != ROOT_PACKAGE:
                    continue
                for a in node.names:
                    full = f"{source}.{a.name}"
                    if is_module(full):
                        aliases[a.asname or a.name] = full
                        continue
                    if _is_private(a.name) and source != me:
                        out.append(f"{rel}:{node.lineno}: from {source} import {a.name}")
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                continue
            chain, base = [], node.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if not isinstance(base, ast.Name) or base.id not in aliases:
                continue
            target = ".".join([aliases[base.id], *reversed(chain)])
            if not is_module(target) or target == me:
                continue
            full = f"{target}.{node.attr}"
            if is_module(full) and (me + ".").startswith(target + "."):
                continue  # a private submodule, used from inside its package
            out.append(f"{rel}:{node.lineno}: {target}.{node.attr}")
    return sorted(set(out))


# --------------------------------------------------------------------------- the tests

def test_import_contracts_hold(view: Path) -> None:
    """Every ``[tool.importlinter]`` contract is kept (layers, engine-not-console, no Textual)."""
    result = lint_imports(view)
    assert result.returncode == 0, "lint-imports found broken contracts:\n" + result.stdout + result.stderr


def test_no_import_cycles(view: Path) -> None:
    graph = import_graph(view)
    cycles = import_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(describe_cycle(graph, c) for c in cycles)


def test_no_private_names_across_modules() -> None:
    found = private_imports()
    assert not found, f"{len(found)} use(s) of another module's private name:\n" + "\n".join(found)


def test_private_name_scan_sees_both_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan itself: ``from m import _x`` and ``m._x`` are found; ``__version__`` and a private
    submodule used inside its own package are not."""
    pkg = tmp_path / "memtui"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '1'\n")
    (pkg / "a.py").write_text("def _helper():\n    pass\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "_impl.py").write_text("X = 1\n")
    (pkg / "sub" / "user.py").write_text("from memtui.sub import _impl\nfrom memtui import __version__\n")
    (pkg / "b.py").write_text("from memtui.a import _helper\nimport memtui.a as a\na._helper()\n"
                              "from memtui import a as a2\na2._helper()\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE_DIR", {"memtui": "memtui"})
    b = str(Path("memtui/b.py"))
    assert private_imports() == [f"{b}:1: from memtui.a import _helper", f"{b}:3: memtui.a._helper",
                                 f"{b}:5: memtui.a._helper"]


def test_cycle_finder_sees_lazy_imports(tmp_path: Path) -> None:
    """A cycle closed only by an import inside a function still counts (grimp reads those too)."""
    pkg = tmp_path / "memtui"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from memtui import b\n")
    (pkg / "b.py").write_text("def f():\n    from memtui import a\n    return a\n")
    cycles = import_cycles(import_graph(tmp_path))
    assert cycles == [["memtui.a", "memtui.b"]]


def test_console_contract_names_every_console_module() -> None:
    """The console's layers list its top-level modules by name (import-linter has no "the rest"),
    so a new module of ``memtui/`` must be placed in a layer, or it would escape the contract."""
    contract = next(c for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["id"] == "console-layers")
    named = set(re.findall(r"memtui(?:\.\w+)+", " ".join(contract["layers"])))
    console = {m.split(".")[1] for m, _ in source_files() if m.count(".") >= 1 and not m.startswith("memtui.engine")}
    missing = sorted(f"memtui.{m}" for m in console - {"__main__"} if f"memtui.{m}" not in named)
    assert not missing, f"place these modules in a layer of the console-layers contract: {missing}"


def test_packages_are_discovered_not_listed() -> None:
    """No hand-kept package list: setuptools' automatic discovery walks each package-dir folder,
    so a new subpackage ships without an edit (checked once by building a wheel; see the docs)."""
    setuptools_cfg = PYPROJECT["tool"]["setuptools"]
    assert "packages" not in setuptools_cfg, "a hand-kept `packages` list would miss new subpackages"
    assert PACKAGE_DIR == {"memtui": "memtui", "memtui.engine": "engine", "memtui.themes": "themes"}
    assert not (ROOT / "setup.py").exists(), "packaging lives in pyproject.toml alone"
    assert PYPROJECT["project"]["license"] == "MIT", "an SPDX string (a table is deprecated and warns)"


def test_package_data_covers_every_shipped_file() -> None:
    """Every demo weight and theme file matches a ``package-data`` glob, so the wheel carries it."""
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    missing = []
    for package, folder in PACKAGE_DIR.items():
        base = ROOT / folder
        for path in base.rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            # the file belongs to the deepest package (folder with __init__.py) above it
            owner = path.parent
            while not (owner / "__init__.py").exists():
                owner = owner.parent
            pkg = ".".join([package, *owner.relative_to(base).parts])
            rel = path.relative_to(owner).as_posix()
            if not any(fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/") for g in data.get(pkg, [])):
                missing.append(f"{path.relative_to(ROOT)} (package {pkg})")
    assert not missing, "files no package-data glob ships:\n" + "\n".join(sorted(missing))


def test_every_detector_module_declares_a_loadable_kind() -> None:
    """Each module with a ``DETECTOR`` table also defines ``load`` (read from source: torch-free)."""
    from memtui.engine.detectors.registry import detector_kinds

    folder = ROOT / PACKAGE_DIR["memtui.engine"] / "detectors"
    kinds = detector_kinds()
    assert {"demo", "nudenet", "imagenet", "style", "clip"} <= set(kinds)
    for d in kinds.values():
        tree = ast.parse((folder / f"{d.module[1:]}.py").read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "load" for n in tree.body), d.module


def test_every_checkpoint_kind_is_readable_or_says_why() -> None:
    from memtui.engine.model.loading.kinds import KINDS

    for k in KINDS:  # exactly one of: a reader, an applier (LoRA), a reason it cannot be loaded
        assert (k.folder or k.file) and [k.read, k.apply, k.unsupported].count(None) == 2, k.name


# --------------------------------------------------------------------------- by hand

def main() -> int:
    """Print the import-linter report, the cycles and the private-name uses; 0 when all are clean."""
    with tempfile.TemporaryDirectory() as tmp:
        view_dir = build_view(Path(tmp))
        result = lint_imports(view_dir)
        print(result.stdout + result.stderr)
        graph = import_graph(view_dir)
        cycles = import_cycles(graph)
        print(f"import cycles: {len(cycles)}")
        for c in cycles:
            print(describe_cycle(graph, c))
    found = private_imports()
    print(f"\nprivate names used across modules: {len(found)}")
    print("\n".join(found))
    return 0 if result.returncode == 0 and not cycles and not found else 1


if __name__ == "__main__":
    sys.exit(main())
