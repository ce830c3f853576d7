"""How the console colours a run's, a sweep's or a sweep cell's status."""
from __future__ import annotations

__all__ = ["STATUS_STYLE"]

STATUS_STYLE = {"running": "bold green", "finished": "cyan", "failed": "bold red", "cancelled": "yellow",
                "interrupted": "yellow", "incomplete": "yellow", "broken": "bold red", "pending": "dim"}
