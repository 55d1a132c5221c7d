"""Text for the ``labcache`` command: sizes, ages, tables, a progress bar.

Everything here is pure formatting (no storage access), stdlib only.

Examples:
    >>> size_text(1_234_000_000), age_text(180), age_text(7200), age_text(5 * 86400)
    ('1.2 GB', '3 m', '2 h', '5 d')
    >>> print(table(["name", "size"], [["a", "1 B"], ["long name", "10 B"]]))
    NAME       SIZE
    a           1 B
    long name  10 B
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

__all__ = ["ProgressBar", "age_text", "size_text", "table"]

_SIZE_UNITS = ("kB", "MB", "GB", "TB", "PB")
#: Columns whose cells are numbers or sizes: right-aligned so digits line up.
_RIGHT = frozenset({"ENTRIES", "SIZE", "TOTAL SIZE", "COMPUTE"})
#: Widest a cell may be before it is cut (arguments can be long).
MAX_CELL = 60


def size_text(size: int | None) -> str:
    """Bytes in decimal units, as ``--max-size`` reads them (``1 GB`` = 10**9).

    Examples:
        >>> size_text(999), size_text(1500), size_text(None)
        ('999 B', '1.5 kB', '?')
    """
    if size is None:
        return "?"
    if size < 1000:
        return f"{size} B"
    amount = float(size)
    for unit in _SIZE_UNITS:
        amount /= 1000
        if amount < 999.95 or unit == _SIZE_UNITS[-1]:
            return f"{amount:.1f} {unit}"
    raise AssertionError("unreachable")


def age_text(seconds: float | None) -> str:
    """A duration in its largest whole unit: ``12 s``, ``3 m``, ``2 h``, ``5 d``.

    Examples:
        >>> age_text(0.4), age_text(59), age_text(-3), age_text(None)
        ('0 s', '59 s', '0 s', '-')
    """
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    for limit, divisor, unit in ((60, 1, "s"), (3600, 60, "m"), (86400, 3600, "h")):
        if seconds < limit:
            return f"{int(seconds // divisor)} {unit}"
    return f"{int(seconds // 86400)} d"


def table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows aligned under upper-case column titles, two spaces apart."""
    titles = [c.upper() for c in columns]
    cells = [[_cut(cell) for cell in row] for row in rows]
    widths = [max(len(line[i]) for line in [titles, *cells]) for i in range(len(titles))]
    lines = []
    for line in [titles, *cells]:
        parts = [cell.rjust(width) if title in _RIGHT else cell.ljust(width)
                 for cell, width, title in zip(line, widths, titles, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cut(cell: str) -> str:
    return cell if len(cell) <= MAX_CELL else cell[: MAX_CELL - 3] + "..."


class ProgressBar:
    """``[#####.....] 120/500 entries`` redrawn on stderr, only on a terminal.

    Examples:
        >>> import io
        >>> bar = ProgressBar("gc", stream=io.StringIO())  # not a TTY: draws nothing
        >>> bar(5, 10); bar.close(); bar.stream.getvalue()
        ''
    """

    width = 30

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label, self.stream = label, stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._drawn, self._last = False, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or total <= 0 or (done < total and now - self._last < 0.1):
            return
        self._last = now
        filled = self.width * done // total
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} entries")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar so the command's own output starts on a clean line."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False
