"""The ``/`` filter of a list: a one-line Input shown on demand, and the word match both the Browse
runs list and the Run screen's items table use."""
from __future__ import annotations

from collections.abc import Iterable

from textual.widgets import Input


def words_match(cells: Iterable[object], words: str) -> bool:
    """Whether every word of ``words`` occurs, case-insensitively, in the text of ``cells``."""
    text = " ".join(str(c) for c in cells).lower()
    return all(w in text for w in words.lower().split())


class FilterBox(Input):
    """Hidden until :meth:`open`; Enter hides it and keeps the filter (the screen handles
    ``Input.Changed`` / ``Input.Submitted``), the screen's Escape clears it."""

    def __init__(self, placeholder: str, **kwargs) -> None:
        super().__init__(placeholder=placeholder, compact=True, **kwargs)
        self.display = False  # hidden (and so not focusable) from the start

    def open(self, value: str) -> None:
        """Show the box holding ``value`` and focus it."""
        self.display = True
        self.value = value
        self.focus()
