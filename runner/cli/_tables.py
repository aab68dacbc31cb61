"""Tables on a terminal that fit its width without cutting what identifies a row.

rich shrinks every column of a table that is too wide, so at 120 columns three
providers ``sim-fast``, ``sim-flaky`` and ``sim-careful`` all became
``sim-…``.  :func:`print_table` decides instead: *key* columns (provider ids,
role names) are never cut or wrapped; columns marked ``wrap`` may wrap; the
columns with the highest ``drop`` rank are left out one at a time until the
table fits; and when even that is too wide the rows are printed one block
each (``key`` line, then ``header value`` pairs), so nothing is ever cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text


class Column(NamedTuple):
    """One column: its header and how it behaves when the terminal is narrow."""

    header: str
    justify: Literal["left", "right"] = "left"
    #: Never cut or wrapped: what tells the rows apart.
    key: bool = False
    #: May wrap onto several lines (details, parameter lists).
    wrap: bool = False
    #: Left out when the table does not fit, highest rank first; 0: always kept.
    drop: int = 0


def print_table(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str | Text]],
    *,
    title: str | None = None,
) -> None:
    """Print ``rows`` under ``columns`` within ``console.width``, cutting no key cell."""
    widths = [
        max([len(c.header), *(len(_plain(row[i])) for row in rows)]) for i, c in enumerate(columns)
    ]
    words = [
        max([0, *(len(w) for row in rows for w in _plain(row[i]).split())])
        for i in range(len(columns))
    ]
    visible = list(range(len(columns)))
    while True:
        # Three characters between columns (padding, the box's blank divider,
        # padding), none at the edges.
        needed = sum(_least(columns[i], widths[i], words[i]) for i in visible)
        needed += 3 * (len(visible) - 1)
        if needed <= console.width:
            console.print(_table(columns, rows, visible, widths, title))
            return
        droppable = [i for i in visible if columns[i].drop]
        if not droppable:
            break
        visible.remove(max(droppable, key=lambda i: (columns[i].drop, i)))
    _print_blocks(console, columns, rows, title)


#: The narrowest a wrapping column is made.
WRAP_MIN = 16
#: A wrapping column is made as wide as its longest word up to this; a longer
#: word (a URL) may fold onto the next line.
WRAP_WIDTH = 30


def _least(column: Column, width: int, words: int) -> int:
    """The fewest characters ``column`` can be shown in without cutting anything.

    ``width`` is its widest cell, ``words`` its longest word.
    """
    if not column.wrap:
        return width
    return min(width, max(len(column.header), WRAP_MIN, min(words, WRAP_WIDTH)))


def _table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str | Text]],
    visible: list[int],
    widths: list[int],
    title: str | None,
) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for i in visible:
        column = columns[i]
        table.add_column(
            column.header,
            justify=column.justify,
            no_wrap=not column.wrap,
            overflow="fold",
            # Fixed at its content's width, so rich shrinks only the wrapping columns.
            width=None if column.wrap else widths[i],
        )
    for row in rows:
        # Text, never markup: a provider's message may contain "[...]".
        table.add_row(*(_text(row[i]) for i in visible))
    return table


def _print_blocks(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str | Text]],
    title: str | None,
) -> None:
    """Each row as a block: its key cells on one line, then ``header value`` pairs packed."""
    from rich.text import Text

    if title:
        console.print(Text(title, style="bold"))
    keys = [i for i, c in enumerate(columns) if c.key]
    rest = [i for i, c in enumerate(columns) if not c.key]
    width = max(console.width - 2, 20)
    for row in rows:
        heading = "  ".join(_plain(row[i]) for i in keys)
        # Too long for one line: one key a line, so no key is broken in two.
        for text in [heading] if len(heading) <= console.width else [_plain(row[i]) for i in keys]:
            console.print(Text(text, style="bold"))
        line = ""
        for i in rest:
            value = _plain(row[i])
            if not value:
                continue
            pair = f"{columns[i].header} {value}"
            if line and len(line) + 3 + len(pair) > width:
                console.print(Text("  " + line))
                line = pair
            else:
                line = f"{line}   {pair}" if line else pair
        if line:
            # Wrapped (not cut) at the terminal's width by rich.
            console.print(Text("  " + line))


def _plain(cell: str | Text) -> str:
    return cell if isinstance(cell, str) else cell.plain


def _text(cell: str | Text) -> Text:
    from rich.text import Text

    return Text(cell) if isinstance(cell, str) else cell
