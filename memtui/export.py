"""Report export from the console: the same writer as ``memtui --batch --report`` (issue 7), run as
a subprocess so matplotlib and the engine stay out of the UI process."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from textual.screen import Screen


def report_dir_for(run_dirs: Sequence[Path]) -> Path:
    """Where the console writes a report: ``<runs folder>/reports/<run name>`` for one run,
    ``<runs folder>/reports/compare-<first>-and-<n-1>-more`` for several."""
    first = Path(run_dirs[0])
    name = first.name if len(run_dirs) == 1 else f"compare-{first.name}-and-{len(run_dirs) - 1}-more"
    return first.parent / "reports" / name


def report_command(run_dirs: Sequence[Path], out_dir: Path) -> list[str]:
    """The batch command line that writes the report of ``run_dirs`` into ``out_dir``."""
    return [sys.executable, "-m", "memtui", "--batch", "--report", *map(str, run_dirs), "--out", str(out_dir)]


def export_report(screen: Screen, run_dirs: Sequence[Path]) -> Path:
    """Start writing the report in a thread worker of ``screen``; notify the path (or the error)."""
    out = report_dir_for(run_dirs)
    cmd = report_command(run_dirs, out)
    screen.notify(f"writing report to {out} …", timeout=3)

    def work() -> None:
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode == 0:
            screen.app.call_from_thread(screen.notify, f"report written: {out / 'report.md'}", timeout=8)
        else:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            screen.app.call_from_thread(screen.notify, f"report failed ({proc.returncode}): {tail}",
                                        severity="error", timeout=10)

    screen.run_worker(work, thread=True, exclusive=True, group="export", exit_on_error=False)
    return out
