"""The log pane: a RichLog that also receives Python ``logging`` records from the console."""
from __future__ import annotations

import logging

from textual.widgets import RichLog


class LogPane(RichLog):
    """A bounded log (``max_lines``), markup off so paths and brackets print as they are."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("max_lines", 500)
        kwargs.setdefault("wrap", True)
        super().__init__(markup=False, highlight=False, **kwargs)
        self.lines_seen: list[str] = []

    def add_lines(self, lines: list[str]) -> None:
        """Append plain text lines (kept in ``lines_seen`` for tests and copy)."""
        for line in lines:
            self.lines_seen.append(line)
            self.write(line)


class AppLogHandler(logging.Handler):
    """Forwards log records to the app's log (thread-safe through ``call_from_thread``)."""

    def __init__(self, app) -> None:
        super().__init__(level=logging.INFO)
        self.app = app

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.app.call_from_thread(self.app.log_message, self.format(record))
        except Exception:
            pass
