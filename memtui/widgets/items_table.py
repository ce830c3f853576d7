"""The live table of a run's items: rows added or updated in place (``update_cell``), sortable,
filterable by words. The table keeps every record (:attr:`ItemsTable.records`, for the histograms
and the item view) and shows the rows matching its filter; DataTable draws only the visible lines,
so 10,000 rows stay responsive."""
from __future__ import annotations

import math
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from .filter_box import words_match

COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("id", "item", 16), ("set", "set", 9), ("psnr", "PSNR dB", 8), ("psnr_seed_only", "seed-only", 9),
    ("nll", "NLL", 9),
    ("status", "status", 6), ("prompt", "prompt", 44),
)
SORT_ORDER: tuple[str, ...] = ("id", "psnr", "psnr_seed_only", "nll", "set", "status")


def _num(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def format_cell(col: str, rec: dict[str, Any]) -> str | Text:
    """The text shown in column ``col`` for a results.jsonl record."""
    if col == "id":
        return str(rec.get("item_id", ""))
    if col in ("psnr", "psnr_seed_only"):
        v = _num(rec.get(col))
        return Text("-" if v is None else f"{v:.2f}", justify="right")
    if col == "nll":
        v = _num(rec.get("nll"))
        return Text("-" if v is None else f"{v:.1f}", justify="right")
    if col == "status":
        st = str(rec.get("status", ""))
        return Text(st, style="bold red" if st == "error" else "green" if st == "ok" else "")
    return str(rec.get(col, "") or "")


class ItemsTable(DataTable):
    """Rows keyed by item id; :meth:`upsert` adds new items and updates changed cells in place."""

    def __init__(self, seed_only: bool = True, **kwargs: Any) -> None:
        """``seed_only``: show the seed-only PSNR column (hidden for methods whose reconstruction
        already is plain DDIM from the seed, where it repeats the PSNR)."""
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.shown = tuple(c for c in COLUMNS if seed_only or c[0] != "psnr_seed_only")
        self.records: dict[str, dict[str, Any]] = {}
        self.filter_words = ""  # words every shown row must contain (``/``)
        self.shown_ids: set[str] = set()
        self.sort_column = "id"
        self.sort_reverse = False

    def on_mount(self) -> None:
        for key, label, width in self.shown:
            self.add_column(label, key=key, width=width)

    @staticmethod
    def row_text(rec: dict[str, Any]) -> tuple[str, ...]:
        """What the filter searches: the item's id, set, status, prompt and error."""
        return tuple(str(rec.get(k) or "") for k in ("item_id", "set", "status", "prompt", "error"))

    def matches(self, rec: dict[str, Any]) -> bool:
        return not self.filter_words or words_match(self.row_text(rec), self.filter_words)

    def add_record_row(self, item_id: str, rec: dict[str, Any]) -> None:
        self.add_row(*(format_cell(c, rec) for c, _, _ in self.shown), key=item_id)
        self.shown_ids.add(item_id)

    def upsert(self, records: list[dict[str, Any]]) -> list[str]:
        """Add or update rows for these results records (rows only for those the filter matches);
        returns the ids that were new."""
        new: list[str] = []
        for rec in records:
            if "item_id" not in rec:
                continue
            item_id = str(rec["item_id"])
            old = self.records.get(item_id)
            self.records[item_id] = rec
            if old is None:
                new.append(item_id)
            shown, show = item_id in self.shown_ids, self.matches(rec)
            if show and not shown:
                self.add_record_row(item_id, rec)
            elif shown and not show:
                self.remove_row(item_id)
                self.shown_ids.discard(item_id)
            elif shown and old is not None:
                for col, _, _ in self.shown:
                    if old.get(col if col != "id" else "item_id") != rec.get(col if col != "id" else "item_id"):
                        self.update_cell(item_id, col, format_cell(col, rec))
        return new

    def set_filter(self, words: str) -> None:
        """Show only the rows whose :meth:`row_text` holds every word (all rows for "")."""
        if words == self.filter_words:
            return
        self.filter_words = words
        current = self.current_id()
        self.clear()
        self.shown_ids.clear()
        for item_id, rec in self.records.items():
            if self.matches(rec):
                self.add_record_row(item_id, rec)
        if self.sort_column != "id" or self.sort_reverse:
            self.apply_sort()
        if current in self.shown_ids:
            self.move_cursor(row=self.get_row_index(current))

    def clear_records(self) -> None:
        """Forget every row (a restarted run begins again from an empty results file)."""
        self.records.clear()
        self.shown_ids.clear()
        self.clear()

    def sort_key(self, item_id: Any) -> tuple:
        """Sort key of a row for the current column: numbers before missing values."""
        rec = self.records.get(str(item_id), {})
        if self.sort_column == "id":
            return (0, str(item_id))
        if self.sort_column in ("psnr", "psnr_seed_only", "nll"):
            v = _num(rec.get(self.sort_column))
            return (0, v, str(item_id)) if v is not None else (1, 0.0, str(item_id))
        return (0, str(rec.get(self.sort_column, "")), str(item_id))

    def apply_sort(self, column: str | None = None, reverse: bool | None = None) -> None:
        """Sort rows by ``column`` (one of :data:`SORT_ORDER`), keeping the cursor's item."""
        if column is not None:
            self.sort_column = column
        if reverse is not None:
            self.sort_reverse = reverse
        current = self.current_id()
        self.sort("id", key=self.sort_key, reverse=self.sort_reverse)
        if current is not None:
            self.move_cursor(row=self.get_row_index(current))

    def cycle_sort(self) -> str:
        """Sort by the next column of :data:`SORT_ORDER`; returns its name."""
        i = SORT_ORDER.index(self.sort_column) if self.sort_column in SORT_ORDER else -1
        self.apply_sort(SORT_ORDER[(i + 1) % len(SORT_ORDER)])
        return self.sort_column

    def current_id(self) -> str | None:
        """Item id of the highlighted row."""
        if self.row_count == 0:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return None if key.value is None else str(key.value)

    def ids_in_order(self) -> list[str]:
        """Item ids as currently displayed, top to bottom."""
        return [str(row.key.value) for row in self.ordered_rows]
