"""Text for the ``labcache`` command: tables and a progress bar (sizes and
ages are written by :mod:`labcache.formatting`, as everywhere else).

Everything here is pure formatting (no storage access), stdlib only.

Examples:
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

__all__ = ["ProgressBar", "table"]

#: Columns whose cells are numbers or sizes: right-aligned so digits line up.
_RIGHT = frozenset({"ENTRIES", "SIZE", "TOTAL SIZE", "COMPUTE"})
#: Widest a cell may be before it is cut (arguments can be long).
MAX_CELL = 60


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
