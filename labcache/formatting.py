"""Sizes and durations as people read them, the same everywhere: the
``labcache`` command, the monitor widget, listings and a call's status line.

Sizes are decimal (1 kB = 1000 bytes, 1 GB = 10**9 bytes), as
:func:`parse_size` reads them for ``max_size="5GB"`` and ``labcache gc
--max-size 5GB``, so a size printed can be typed back; :func:`parse_age`
reads ages (``30d``) the same way.  Durations and ages show at most two units, the
second only when it is not zero; below ten seconds they keep their
fractions, so a quick load still says how quick.

Examples:
    >>> size_text(1_234_000_000), size_text(2048), size_text(512)
    ('1.2 GB', '2.0 kB', '512 B')
    >>> duration_text(0.0213), duration_text(133), duration_text(7200), duration_text(5 * 86400)
    ('0.02 s', '2 m 13 s', '2 h', '5 d')
    >>> parse_size("5GB"), parse_size("1.5 GiB"), parse_age("30d"), parse_age(45)
    (5000000000, 1610612736, 2592000.0, 45.0)
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

__all__ = ["ago_text", "duration_text", "parse_age", "parse_size", "size_text"]

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


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_size(size: str | int, require_unit: bool = False) -> int:
    """Bytes from ``5GB``, ``500 MB``, ``1.5GiB``, ``123`` (kB/MB/GB are powers
    of 1000, KiB/MiB/GiB powers of 1024); ``ValueError`` on anything else.

    Examples:
        >>> parse_size("500 MB")
        500000000
        >>> parse_size("lots")
        Traceback (most recent call last):
        ValueError: cannot read 'lots' as a size; write a number and a unit such as ...
    """
    if isinstance(size, float):
        raise ValueError(f"cannot read {size!r} as a size; write whole bytes or a number "
                         "and a unit such as 500MB, 5GB or 1.5GiB")
    return int(_quantity(size, _UNITS, "size", "500MB, 5GB or 1.5GiB", require_unit))


def parse_age(age: str | float, require_unit: bool = False) -> float:
    """Seconds from ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or a number of
    seconds; ``ValueError`` on anything else.  ``require_unit`` refuses a
    bare number (the command line: ``30`` must not quietly mean seconds).

    Examples:
        >>> parse_age("2w")
        1209600.0
        >>> parse_age("soon")
        Traceback (most recent call last):
        ValueError: cannot read 'soon' as an age; write a number and a unit such as ...
    """
    return _quantity(age, _AGE_UNITS, "age", "45s, 90m, 12h, 30d or 2w", require_unit)


def _quantity(value: object, units: Mapping[str, float], what: str, examples: str,
              require_unit: bool = False) -> float:
    """A number, or a number and one of ``units``, as a float (never negative)."""
    article = "an" if what == "age" else "a"
    # A bare number needs a unit, except 0, which is 0 in every unit.
    bare = isinstance(value, str) and value.strip().replace(".", "").isdigit()
    if require_unit and (not isinstance(value, str) or (bare and float(value) != 0)):
        raise ValueError(f"{value!r} has no unit; write {article} {what} with its unit, "
                         f"such as {examples}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{'an' if what == 'age' else 'a'} {what} cannot be negative "
                             f"({value})")
        return float(value)
    match = _NUMBER.fullmatch(value) if isinstance(value, str) else None
    unit = match[2].lower() if match else ""
    if match is None or unit not in units:
        raise ValueError(f"cannot read {value!r} as {'an' if what == 'age' else 'a'} {what}; "
                         f"write a number and a unit such as {examples}")
    return float(match[1]) * units[unit]
