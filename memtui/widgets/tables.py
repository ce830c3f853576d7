"""Filling DataTables with measured column widths.

DataTable's auto widths are computed on idle, and a cell rendered before that keeps its too-narrow
rendering in the table's cache (Textual 8.2); tables that are refilled from scans therefore get
explicit widths measured here."""
from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable


def cell_width(value: object) -> int:
    """Terminal cells needed to show ``value`` on one line."""
    return cell_len(value.plain if isinstance(value, Text) else str(value))


def sync_table(table: DataTable, rows: list[tuple[str, tuple]],
               columns: Sequence[tuple[str, str]] | None = None, max_width: int = 60) -> None:
    """Make ``table`` show ``rows`` (key, cells) under ``columns`` (key, label; default: the
    table's current ones), keeping the cursor's row; a no-op when nothing changed. When the columns
    and the row keys are unchanged and every new cell fits its column, only the changed cells are
    updated (a rescan of 500 runs redraws the few that moved); otherwise the table is rebuilt."""
    if columns is None:
        columns = [(str(c.key.value), str(c.label)) for c in table.ordered_columns]
    current_cols = [(str(c.key.value), str(c.label)) for c in table.ordered_columns]
    if current_cols == list(columns) and [str(r.key.value) for r in table.ordered_rows] == [k for k, _ in rows]:
        widths = [c.width for c in table.ordered_columns]
        changed: list[tuple[str, int, object]] = []
        fits = True
        for key, cells in rows:
            old = table.get_row(key)
            for i, (a, b) in enumerate(zip(old, cells)):
                if a != b:
                    changed.append((key, i, b))
                    fits = fits and (cell_width(b) <= widths[i] or widths[i] >= max_width)
        if fits:
            for key, i, value in changed:
                table.update_cell(key, columns[i][0], value)
            return
    cursor = table.cursor_row
    widths = [min(max_width, max([cell_width(label)] + [cell_width(cells[i]) for _, cells in rows]))
              for i, (_, label) in enumerate(columns)]
    table.clear(columns=True)
    for (key, label), width in zip(columns, widths):
        table.add_column(label, key=key, width=width)
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if rows:
        table.move_cursor(row=min(cursor, len(rows) - 1), animate=False)
