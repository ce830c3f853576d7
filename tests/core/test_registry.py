"""The registry's discovery: every module of the package is in before anyone, on any thread, reads
it (the console's scan worker and its UI thread both ask for analyses on start-up)."""
from __future__ import annotations

import sys
import textwrap
import threading

import pytest

from memtui.engine.core.registry import Registry


@pytest.fixture
def slow_package(tmp_path, monkeypatch):
    """A package ``slowpkg`` whose two modules take 0.3 s each to import, then register."""
    pkg = tmp_path / "slowpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from memtui.engine.core.registry import Registry\nREG = Registry('thing', 'slowpkg')\n")
    for name in ("alpha", "beta"):
        (pkg / f"{name}.py").write_text(textwrap.dedent(f"""
            import time
            from slowpkg import REG
            time.sleep(0.3)

            @REG.register
            class Thing:
                name = {name!r}
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for mod in [m for m in sys.modules if m == "slowpkg" or m.startswith("slowpkg.")]:
        del sys.modules[mod]


def test_a_second_thread_waits_for_discovery_to_finish(slow_package) -> None:
    import slowpkg

    reg: Registry = slowpkg.REG
    started = threading.Event()
    first = threading.Thread(target=lambda: (started.set(), reg.discover()))
    first.start()
    started.wait()
    seen = reg.names()  # asked while the first thread is still importing alpha
    first.join()
    assert seen == ("alpha", "beta")
    assert reg.get("beta").name == "beta"


def test_a_module_that_fails_to_import_is_reported_again_not_left_half_read(slow_package) -> None:
    (slow_package / "gamma.py").write_text("raise ImportError('gamma needs a library this host lacks')\n")
    import slowpkg

    for _ in range(2):
        with pytest.raises(ImportError, match="gamma needs"):
            slowpkg.REG.names()
