"""What a cached call tells people: the kernel's counters and status lines.

The protocol reports events to a :class:`Reporter`, which counts them and
logs them to the ``labcache`` logger.  In a Jupyter kernel it also passes
them to a :class:`StatusLine` that draws a live line in the running cell
(``labcache.jupyter.status``): :func:`reporter_for` is the one place where
the core reaches into ``labcache.jupyter``, and that module imports nothing
that imports it back.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from .base import LockInfo
from .formatting import duration_text

__all__ = ["Reporter", "Stats", "StatusLine", "reporter_for", "stats"]

logger = logging.getLogger("labcache")


@dataclass
class Stats:
    """This process's cache activity (the widget shows it).

    Examples:
        >>> s = Stats()
        >>> s.hits, s.misses
        (0, 0)
    """

    hits: int = 0
    misses: int = 0
    waits: int = 0
    computations: int = 0
    failures: int = 0
    seconds_saved: float = 0.0
    #: Why this process last recomputed after a code change ("m.f: helper g changed").
    last_recompute: str = ""
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_hit(self, seconds_saved: float) -> None:
        """Count one hit (the hot path: no keyword unpacking)."""
        with self._guard:
            self.hits += 1
            self.seconds_saved += seconds_saved

    def add(self, **counts: float) -> None:
        """Add to counters by name, safely from any thread."""
        with self._guard:
            for name, amount in counts.items():
                setattr(self, name, getattr(self, name) + amount)


#: The counters of this process.
stats = Stats()


class StatusLine(Protocol):
    """Draws one call's status where a person watches it, as the call goes.

    A :class:`Reporter` given one passes it every event after counting and
    logging it.  ``labcache.jupyter.status.CellStatus`` is the one in a
    notebook cell.
    """

    def computing(self, reason: str | None) -> None:
        """This call starts computing (``reason``: why, when known)."""

    def computed(self, seconds: float, reason: str | None) -> None:
        """The result was computed and stored."""

    def waiting(self, holder: LockInfo | None, waited: float) -> None:
        """Another process holds the lock (called on every poll)."""

    def loaded(self, load_seconds: float, saved: float) -> None:
        """A hit, ``saved`` seconds of computing spared."""

    def refreshing(self, who: str) -> None:
        """A stale entry was returned; ``who`` recomputes it."""

    def failed(self, error: BaseException) -> None:
        """The computation raised."""

    def finished(self) -> None:
        """The call is over, whatever happened."""


class Reporter:
    """Receives the events of one cached call: counts and logs them, and
    passes them on to ``line`` (a live status line) when there is one.

    Examples:
        >>> Reporter("f").loaded(load_seconds=0.02, compute_seconds=41.0)
    """

    #: Minimum seconds between two "still waiting" lines.
    waiting_every: float = 30.0

    def __init__(self, function: str, line: StatusLine | None = None) -> None:
        self.function = function
        #: Where the call's status is drawn as it goes (a notebook cell), if anywhere.
        self.line = line
        #: Why this call computes, when known cheaply ("helper scale changed").
        self.reason: str | None = None
        self._last_wait_line = 0.0
        self._waited = False

    def loaded(self, load_seconds: float, compute_seconds: float | None) -> None:
        """A hit: the result came from the cache."""
        saved = max((compute_seconds or 0.0) - load_seconds, 0.0)
        stats.add_hit(saved)
        if logger.isEnabledFor(logging.DEBUG):  # formatting costs more than a hit
            logger.debug("%s: loaded from cache in %s, saved %s", self.function,
                         duration_text(load_seconds), duration_text(saved))
        if self.line is not None:
            self.line.loaded(load_seconds, saved)

    def computing(self) -> None:
        """This call holds the lock and starts computing."""
        stats.add(misses=1)
        if self.reason:
            stats.last_recompute = f"{self.function}: {self.reason}"
            logger.info("%s: recomputing: %s", self.function, self.reason)
        else:
            logger.debug("%s: computing", self.function)
        if self.line is not None:
            self.line.computing(self.reason)

    def computed(self, seconds: float) -> None:
        """The computation finished and its result was stored."""
        stats.add(computations=1)
        logger.debug("%s: computed in %s", self.function, duration_text(seconds))
        if self.line is not None:
            self.line.computed(seconds, self.reason)

    def waiting(self, holder: LockInfo | None, waited: float) -> None:
        """Called on every poll while another process holds the lock."""
        self._log_waiting(holder, waited)
        if self.line is not None:
            self.line.waiting(holder, waited)

    def _log_waiting(self, holder: LockInfo | None, waited: float) -> None:
        """Count the wait once; log it at most every ``waiting_every`` seconds."""
        now = time.monotonic()
        if not self._waited:
            self._waited = True
            stats.add(waits=1)
        elif now - self._last_wait_line < self.waiting_every:
            return
        self._last_wait_line = now
        if holder is None:
            logger.info("%s: waiting for another process, %s", self.function,
                        duration_text(waited))
            return
        beat = duration_text(max(time.time() - holder.heartbeat, 0.0))
        logger.info("%s: waiting for %s, %s, last beat %s ago", self.function,
                    holder.holder, duration_text(waited), beat)

    def refreshing(self, who: str) -> None:
        """A stale entry was returned; ``who`` (``user@host``) recomputes it
        in the background (``@cached(stale_after=...)``)."""
        logger.info("%s: returned a stale entry; refreshing on %s", self.function, who)
        if self.line is not None:
            self.line.refreshing(who)

    def failed(self, error: BaseException) -> None:
        """The computation (ours or the holder's) raised."""
        stats.add(failures=1)
        logger.debug("%s: failed with %s", self.function, type(error).__name__)
        if self.line is not None:
            self.line.failed(error)

    def finished(self) -> None:
        """The call is over, whatever happened."""
        if self.line is not None:
            self.line.finished()


def reporter_for(function: str, always_summarize: bool = False) -> Reporter:
    """The reporter for one call: with a live line in a Jupyter cell when
    this process is a kernel running one, else the log alone.

    Examples:
        >>> reporter_for("f").line is None  # not in a kernel
        True
    """
    if "ipykernel" in sys.modules:  # cheap test first: hits must stay fast
        from .jupyter.status import cell_status  # the one hook into labcache.jupyter

        return Reporter(function, cell_status(always_summarize))
    return Reporter(function)
