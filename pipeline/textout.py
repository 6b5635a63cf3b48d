"""Text a person reads on a terminal or in a piped log: plain columns.

Columns are as wide as their widest cell, so a view or store name is never
cut, whatever the terminal's width and when the output is piped to a file or
another program. (Rich tables fit the terminal, or 80 columns when there is
none, and cut what does not fit.)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def columns(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    right: Collection[int] = (),
) -> str:
    """``rows`` under ``header``, two spaces between columns; the columns
    whose index is in ``right`` are right-aligned (numbers)."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def plain_table(table: Table) -> str:
    """A rich table as its title over plain :func:`columns` (markup dropped)."""

    def text(cell: object) -> str:
        return Text.from_markup(cell).plain if isinstance(cell, str) else str(cell)

    cols = table.columns
    rows = list(zip(*(list(c.cells) for c in cols), strict=True)) if cols else []
    body = columns(
        [text(c.header) for c in cols],
        [[text(cell) for cell in row] for row in rows],
        right={i for i, c in enumerate(cols) if c.justify == "right"},
    )
    return body if table.title is None else f"{text(table.title)}\n{body}"


class PipeConsole(Console):
    """A rich console that prints tables as plain columns when its output is
    not a terminal, rather than fitting them to 80 columns and cutting names."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if self.is_terminal or not any(isinstance(o, Table) for o in objects):
            super().print(*objects, **kwargs)
            return
        for obj in objects:
            if isinstance(obj, Table):
                super().print(Text(plain_table(obj)), soft_wrap=True)
            else:
                super().print(obj, **kwargs)
