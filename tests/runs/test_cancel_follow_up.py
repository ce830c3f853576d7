"""A stop during a follow-up of a finished analysis (the demo's prompt test, found by a tmux
session: Ctrl+C there printed a traceback and "run failed", exit 1) is a cancellation: exit 130,
one line saying the records are kept; an InterruptedError without a stop is still a failure."""
from __future__ import annotations

import contextlib
import io

import pytest

from memtui.cli import main
from memtui.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED


@pytest.mark.parametrize("stopped", [True, False])
def test_interrupted_follow_up(tiny_pipe_dir, concept_data, tmp_path, monkeypatch, stopped) -> None:
    import memtui.engine.compute.run as run_module

    def fake_run_spec(spec, rd, progress=None, cancel=None):
        if stopped:
            cancel.set()  # what the first Ctrl+C does (StopOnSignals)
        raise InterruptedError("prompt test cancelled")

    monkeypatch.setattr(run_module, "run_spec", fake_run_spec)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--batch", "--base", str(tiny_pipe_dir), "--erased", str(concept_data[0]),
                     "--reference", str(concept_data[1]), "--steps", "2", "--device", "cpu",
                     "--out", str(tmp_path / "run")])
    text = err.getvalue()
    if stopped:
        assert code == EXIT_INTERRUPTED
        assert "cancelled (prompt test cancelled); the run's records are kept" in text
        assert "Traceback" not in text and "run failed" not in text
    else:
        assert code == EXIT_FAILED and "run failed: InterruptedError: prompt test cancelled" in text
