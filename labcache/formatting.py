"""Sizes and durations as people read them, the same everywhere: the
``labcache`` command, the monitor widget, listings and a call's status line.

Sizes are decimal (1 kB = 1000 bytes, 1 GB = 10**9 bytes), as
``max_size="5GB"`` and ``labcache gc --max-size 5GB`` read them, so a size
printed can be typed back.  Durations and ages show at most two units, the
second only when it is not zero; below ten seconds they keep their
fractions, so a quick load still says how quick.

Examples:
    >>> size_text(1_234_000_000), size_text(2048), size_text(512)
    ('1.2 GB', '2.0 kB', '512 B')
    >>> duration_text(0.0213), duration_text(133), duration_text(7200), duration_text(5 * 86400)
    ('0.02 s', '2 m 13 s', '2 h', '5 d')
"""

from __future__ import annotations

import time

__all__ = ["ago_text", "duration_text", "size_text"]

_SIZE_UNITS = ("kB", "MB", "GB", "TB", "PB")
#: (unit, seconds in it, the next smaller unit, seconds in that), largest first.
_SPANS = (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1))


def size_text(size: int | None) -> str:
    """Bytes in decimal units; ``?`` when unknown.

    Examples:
        >>> size_text(999), size_text(1500), size_text(3 * 2**30), size_text(None)
        ('999 B', '1.5 kB', '3.2 GB', '?')
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


def duration_text(seconds: float | None) -> str:
    """A duration or an age; never negative (clocks differ a little); ``?``
    when unknown.

    Examples:
        >>> duration_text(4.25), duration_text(41), duration_text(180), duration_text(3720)
        ('4.2 s', '41 s', '3 m', '1 h 2 m')
        >>> duration_text(-0.5), duration_text(None), duration_text(90000)
        ('0.00 s', '?', '1 d 1 h')
    """
    if seconds is None:
        return "?"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    whole = int(seconds)
    for unit, size, smaller, smaller_size in _SPANS:
        if whole >= size:
            count, rest = divmod(whole, size)
            part = rest // smaller_size
            return f"{count} {unit} {part} {smaller}" if part else f"{count} {unit}"
    raise AssertionError("unreachable")


def ago_text(when: float | None, now: float | None = None) -> str:
    """How long ago a Unix time was; ``?`` when unknown.

    Examples:
        >>> ago_text(100.0, now=141.0), ago_text(None)
        ('41 s ago', '?')
    """
    if when is None:
        return "?"
    return f"{duration_text((time.time() if now is None else now) - when)} ago"
