"""Stopping a headless command by signal: SIGINT / SIGTERM / SIGHUP set a cancel event the first
time (the run, or every cell of a sweep, stops after its current batch and stays resumable) and,
where asked, raise KeyboardInterrupt the second time. Installed only from the main thread."""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any

__all__ = ["StopOnSignals", "SIGNALS"]

SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class StopOnSignals:
    """Context manager: the signals of :data:`SIGNALS` set ``cancel`` and print ``message`` once;
    with ``abort_on_second`` a second signal raises KeyboardInterrupt. Previous handlers come back
    on exit."""

    def __init__(self, cancel: threading.Event, message: str, abort_on_second: bool = True) -> None:
        self.cancel, self.message, self.abort_on_second = cancel, message, abort_on_second
        self.old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.cancel.is_set():
            if self.abort_on_second:
                raise KeyboardInterrupt
            return
        self.cancel.set()
        try:  # after a hang-up the terminal may be gone: the message must not break the run
            print(f"memtui: {self.message}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self.old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)
