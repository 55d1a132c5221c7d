"""The live status line a cached call shows in its notebook cell.

While a call waits for another holder or computes, one output line in the
cell updates itself ("waiting for alice@gpu-3 pid 4242, 2 m 13 s, last beat
4 s ago", "computing, 37 s"); when the call ends the line becomes a short
summary ("loaded from cache in 0.02 s, saved 41 s").  Quick hits show
nothing, and so do quick misses, so a loop over cached calls does not flood
the cell.

``labcache.report.reporter_for`` asks :func:`cell_status` for the line; this
module imports nothing that imports it back.
"""

from __future__ import annotations

import html
import sys
import threading
import time
import uuid
from typing import Any

from ..base import LockInfo
from ..formatting import duration_text

__all__ = ["CellStatus", "cell_status"]

#: A hit that saved at least this many seconds gets a summary line.
WORTH_SHOWING = 1.0
#: Seconds between two updates of a live line.
UPDATE_EVERY = 1.0


class _Line:
    """What the display shows: plain text, and the same as small HTML."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"labcache: {self.text}"

    def _repr_html_(self) -> str:
        return (f'<div class="labcache-status" style="font-family: monospace; '
                f'font-size: 90%; color: #555">labcache: {html.escape(self.text)}</div>')


class CellStatus:
    """Draws a call's status line into the running cell: the
    :class:`~labcache.report.StatusLine` a kernel's reporters pass events to.

    Examples:
        >>> shown = []
        >>> line = CellStatus(show=lambda line, handle: shown.append(line))
        >>> line.computed(2.0, reason=None)
        >>> shown
        [labcache: computed in 2.0 s, stored for next time]
    """

    def __init__(self, show: Any, always_summarize: bool = False) -> None:
        self._show = show
        self._always = always_summarize
        self._handle: Any = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self._began = time.monotonic()
        self._last_update = 0.0
        self._reason: str | None = None

    # -- events, passed on by the call's Reporter ------------------------------

    def computing(self, reason: str | None) -> None:
        self._began = time.monotonic()
        self._reason = reason
        if reason:  # set only on the first call after a change: one line, not a flood
            self._put(f"recomputing: {reason}")
        # The first line comes from the ticker, after a second: a quick miss
        # in a loop must not add a line per call.
        self._ticker = threading.Thread(target=self._tick, daemon=True,
                                        name="labcache-status")
        self._ticker.start()

    def computed(self, seconds: float, reason: str | None) -> None:
        self._stop_ticker()
        if self._handle is not None or self._always or seconds >= WORTH_SHOWING:
            why = f" ({reason})" if reason else ""
            self._put(f"computed in {duration_text(seconds)}{why}, stored for next time")

    def waiting(self, holder: LockInfo | None, waited: float) -> None:
        now = time.monotonic()
        if self._handle is not None and now - self._last_update < UPDATE_EVERY:
            return
        self._last_update = now
        if holder is None:
            self._put(f"waiting for another process, {duration_text(waited)}")
            return
        beat = duration_text(max(time.time() - holder.heartbeat, 0.0))
        self._put(f"waiting for {holder.holder}, {duration_text(waited)}, "
                  f"last beat {beat} ago")

    def loaded(self, load_seconds: float, saved: float) -> None:
        if self._handle is None and not self._always and saved < WORTH_SHOWING:
            return
        self._put(f"loaded from cache in {duration_text(load_seconds)}, "
                  f"saved {duration_text(saved)}")

    def refreshing(self, who: str) -> None:
        self._put(f"returned a stale entry; refreshing on {who}")

    def failed(self, error: BaseException) -> None:
        self._stop_ticker()
        if self._handle is not None:
            self._put(f"failed with {type(error).__name__} after "
                      f"{duration_text(time.monotonic() - self._began)}")

    def finished(self) -> None:
        self._stop_ticker()

    # -- drawing -------------------------------------------------------------------

    def _put(self, text: str) -> None:
        self._handle = self._show(_Line(text), self._handle)

    def _tick(self) -> None:
        while not self._stop.wait(UPDATE_EVERY):
            doing = f"recomputing: {self._reason}" if self._reason else "computing"
            self._put(f"{doing}, {duration_text(time.monotonic() - self._began)}")

    def _stop_ticker(self) -> None:
        self._stop.set()
        if self._ticker is not None and self._ticker is not threading.current_thread():
            self._ticker.join()
        self._ticker = None


def _publisher(publisher: Any) -> Any:
    """A ``show`` function drawing through ``publisher`` (the kernel's own).

    The line is published directly, not through ``IPython.display``: while
    ``%%cache`` captures the cell's output, its status line must still reach
    the notebook, and must not be stored with the cell's output.
    """
    display_id = uuid.uuid4().hex

    def show(line: _Line, handle: Any) -> Any:
        bundle = {"text/plain": repr(line), "text/html": line._repr_html_()}
        publisher.publish(data=bundle, metadata={}, transient={"display_id": display_id},
                          update=handle is not None)
        return display_id

    return show


def cell_status(always_summarize: bool = False) -> CellStatus | None:
    """A CellStatus if this process is a Jupyter kernel running a cell, else None."""
    ipython_module = sys.modules.get("IPython")
    if ipython_module is None:
        return None
    shell = ipython_module.get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    return CellStatus(_publisher(shell.display_pub), always_summarize)
