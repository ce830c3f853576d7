"""Reports of run directories: Markdown + PNG figures (matplotlib, the optional ``report`` extra)
+ CSV files of every number. Entry point: :func:`write_report`."""
from __future__ import annotations

from memtui.engine.report.write import write_report

__all__ = ["write_report"]
