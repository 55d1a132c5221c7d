"""``labcache.monitor()``: a notebook panel over a storage's entries and locks.

The panel lists every cached function (entries, size, newest entry and who
made it), pages through one function's entries, shows the live locks and
this kernel's hits and misses, and offers the few repairs people need:
invalidate an entry, clear a function, break a lock.  Anything destructive
asks for a second click on *Confirm*; a lock whose holder is alive is only
broken with *force* ticked.  Errors become a message in the panel, never a
traceback in the notebook.  A daemon thread refreshes the panel every
``refresh_every`` seconds until the panel is closed.

Examples:
    >>> import tempfile
    >>> from labcache import LocalStorage
    >>> panel = monitor(LocalStorage(tempfile.mkdtemp()), refresh_every=None)
    >>> "no cached entries yet" in panel.html()
    True
    >>> panel.close()
"""

from __future__ import annotations

import html
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets  # type: ignore[import-untyped]

from .. import listing
from ..base import BaseLockingStorage, BaseStorage, EntryStat, LockInfo
from ..formatting import duration_text
from ..listing import ENTRY_COLUMNS, FUNCTION_COLUMNS, LOCK_COLUMNS, EntryView
from ..report import stats

__all__ = ["Monitor", "monitor"]

#: Entries per page of the entry view.
PER_PAGE = 50
#: A question not confirmed within this many seconds must be asked again.
CONFIRM_WITHIN = 60.0
_TONES = {"info": "#555", "ok": "#1a7f37", "error": "#b42318"}
_STYLE = ("<style>.labcache-table td, .labcache-table th {padding: 1px 8px; "
          "text-align: left; font-family: monospace; font-size: 90%} "
          ".labcache-refused td {color: #b42318}</style>")


def monitor(storage: BaseStorage | str | None = None,
            refresh_every: float | None = 5.0) -> Monitor:
    """A panel over ``storage`` (None: the default storage; a string: a URL).

    ``refresh_every`` seconds between automatic refreshes; None turns them off.
    """
    return Monitor(storage, refresh_every)


@dataclass(frozen=True)
class _Question:
    """A destructive action waiting for its Confirm click."""

    action: str  # "clear" or "break"
    target: str  # the context, or the lock name
    token: str  # the lock token seen when asked ("" for clear)
    asked: float
    forced: bool = False  # a fresh lock, with force ticked


class Monitor(widgets.VBox):
    """The monitor panel; build it with :func:`monitor`."""

    def __init__(self, storage: BaseStorage | str | None = None,
                 refresh_every: float | None = 5.0, time_budget: float = 2.0) -> None:
        self._stop = threading.Event()
        self._guard = threading.RLock()
        self.storage = _open(storage)
        self.refresh_every, self.time_budget = refresh_every, time_budget
        self._page, self._updating, self._problem = 0, False, ""
        self._question: _Question | None = None
        self._thread: threading.Thread | None = None
        self._listing: tuple[str, list[EntryStat]] | None = None  # (context, its entries)
        self.header, self.functions, self.entries = widgets.HTML(), widgets.HTML(), widgets.HTML()
        self.locks, self.kernel_stats, self.status = widgets.HTML(), widgets.HTML(), widgets.HTML()
        self.function_choice = widgets.Dropdown(description="function", options=[])
        self.entry_choice = widgets.Dropdown(description="entry", options=[])
        self.lock_choice = widgets.Dropdown(description="lock", options=[],
                                            layout=widgets.Layout(width="45%"))
        self.page_label = widgets.HTML()
        self.force = widgets.Checkbox(description="force (holder alive)", value=False)
        self.prev_button = self._button("Prev", lambda: self._turn(-1))
        self.next_button = self._button("Next", lambda: self._turn(1))
        self.refresh_button = self._button("Refresh", self._refresh_clicked)
        self.clear_button = self._button("Clear function", self._ask_clear, "warning")
        self.invalidate_button = self._button("Invalidate selected entry", self._invalidate)
        self.break_button = self._button("Break lock", self._ask_break, "warning")
        self.confirm_button = self._button("Confirm", self._confirm, "danger")
        self.cancel_button = self._button("Cancel", lambda: self._ask(None, "cancelled"))
        self.function_choice.observe(self._function_changed, names="value")
        super().__init__(children=[
            self.header, widgets.HBox([self.refresh_button, self.confirm_button,
                                       self.cancel_button]), self.status,
            widgets.HTML("<b>Functions</b>"), self.functions,
            widgets.HBox([self.function_choice, self.clear_button]),
            widgets.HBox([self.prev_button, self.next_button, self.page_label]),
            self.entries, widgets.HBox([self.entry_choice, self.invalidate_button]),
            widgets.HTML("<b>Locks</b>"), self.locks,
            widgets.HBox([self.lock_choice, self.force, self.break_button]),
            widgets.HTML("<b>This kernel</b>"), self.kernel_stats,
        ])
        self._ask(None, "")
        self.refresh()
        if refresh_every is not None and refresh_every > 0:
            self._start(refresh_every)

    # -- reading --------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the storage again and redraw everything; a failure is shown
        in the header and the next refresh tries again."""
        with self._guard:
            if self._stop.is_set():
                return
            try:
                self._redraw()
                self._problem = ""
            except Exception as exc:  # an outage must not kill the panel or its thread
                self._problem = f"refresh failed: {type(exc).__name__}: {exc}"
            self.kernel_stats.value = html.escape(_stats_text())
            root = html.escape(str(self.storage.get_root_path()))
            problem = (f' <span style="color: {_TONES["error"]}">'
                       f"{html.escape(self._problem)}</span>") if self._problem else ""
            self.header.value = (f"<b>labcache monitor</b> <code>{root}</code> · refreshed "
                                 f"at {time.strftime('%H:%M:%S')}{problem}")

    def html(self) -> str:
        """The panel's text as one HTML string (for tests and logs)."""
        return "\n".join(w.value for w in (self.header, self.status, self.functions,
                                           self.page_label, self.entries, self.locks,
                                           self.kernel_stats))

    def _redraw(self) -> None:
        selected = self.function_choice.value
        self._listing = None if selected is None else (
            selected, listing.describe(self.storage, selected))  # listed once per refresh
        summaries = listing.summarize(self.storage, self.time_budget,
                                      dict([self._listing]) if self._listing else None)
        self.functions.value = _table(
            FUNCTION_COLUMNS, [listing.function_cells(s) for s in summaries],
            ["labcache-function"] * len(summaries), "no cached entries yet")
        self._set_options(self.function_choice,
                          [(f"{s.context} ({s.entries})", s.context) for s in summaries])
        if self.function_choice.value != selected:
            self._page = 0
        self._draw_entries()
        listable = listing.can_list_locks(self.storage)
        self.break_button.disabled = not listable
        locks = listing.lock_rows(self.storage, [s.context for s in summaries]) if listable else []
        self.locks.value = _table(LOCK_COLUMNS, [listing.lock_cells(r) for r in locks],
                                  [f"labcache-lock-{r.state}" for r in locks],
                                  "no locks held" if listable else
                                  "this storage cannot list its locks")
        self._set_options(self.lock_choice, [
            (f"{row.context.rsplit('.', 1)[-1]} {row.key[:12]} ({row.state})", row.name)
            for row in locks])

    def _draw_entries(self) -> None:
        context = self.function_choice.value
        rows: list[EntryView] = []
        total = 0
        if context is not None:
            if self._listing is None or self._listing[0] != context:
                self._listing = (context, listing.describe(self.storage, context))
            self._page = min(self._page, max(len(self._listing[1]) - 1, 0) // PER_PAGE)
            rows, total = listing.entries_page(self.storage, context, self._page, PER_PAGE,
                                               self._listing[1])
        pages = max(1, -(-total // PER_PAGE))
        self.page_label.value = f"page {self._page + 1} of {pages} ({total} entries)"
        self.prev_button.disabled = self._page == 0
        self.next_button.disabled = self._page + 1 >= pages
        self.entries.value = _table(ENTRY_COLUMNS, [listing.entry_cells(r) for r in rows],
                                    [_entry_class(r) for r in rows], "no entries")
        self._set_options(self.entry_choice, [
            (f"{row.name[:16]} {listing.arguments_text(row)[:60]}", row.name) for row in rows])

    def _set_options(self, choice: widgets.Dropdown, options: list[tuple[str, str]]) -> None:
        """Replace a dropdown's options, keeping its selection when still offered."""
        if tuple(choice.options) == tuple(options):
            return
        keep, self._updating = choice.value, True
        try:
            choice.options = options
            values = [value for _, value in options]
            choice.value = keep if keep in values else (values[0] if values else None)
        finally:
            self._updating = False

    def _function_changed(self, change: dict[str, Any]) -> None:
        if not self._updating:  # a person chose another function: its first page
            self._guarded(lambda: self._turn(-self._page))()

    # -- actions (each runs under _guarded: messages, never exceptions) ---------------

    def _refresh_clicked(self) -> None:
        self.refresh()
        self._say("refreshed" if not self._problem else self._problem,
                  "info" if not self._problem else "error")

    def _turn(self, step: int) -> None:
        self._page = max(self._page + step, 0)
        self._draw_entries()

    def _invalidate(self) -> None:
        context, name = self.function_choice.value, self.entry_choice.value
        if context is None or name is None:
            return self._say("select a function and an entry first", "error")
        try:
            self.storage.delete_file(name, context)
        except FileNotFoundError:
            self._say(f"entry {name} of {context} was already gone", "info")
        else:
            self._say(f"invalidated entry {name} of {context}", "ok")
        self.refresh()

    def _ask_clear(self) -> None:
        context = self.function_choice.value
        if context is None:
            return self._say("select a function first", "error")
        count = len(self.storage.list_stored_files(context))
        self._ask(_Question("clear", context, "", time.monotonic()),
                  f"delete all {count} entries of {context}? Click Confirm")

    def _lock_info(self, name: str) -> LockInfo | None:
        if not isinstance(self.storage, BaseLockingStorage):
            return None  # a storage without locks
        return self.storage.lock_info(name)

    def _ask_break(self) -> None:
        name = self.lock_choice.value
        info = None if name is None else self._lock_info(name)
        if name is None or info is None:
            self.refresh()
            return self._say("that lock is gone (or none is selected)", "info")
        beat = duration_text(time.time() - info.heartbeat)
        if not info.stale and not self.force.value:
            return self._say(f"refused: {name} is held by {info.holder}, alive (last beat "
                             f"{beat} ago); tick force to break it anyway", "error")
        state = "stale" if info.stale else "FRESH (its holder is alive and may still write)"
        self._ask(_Question("break", name, info.token, time.monotonic(), not info.stale),
                  f"break {state} lock {name} held by {info.holder}? Click Confirm")

    def _confirm(self) -> None:
        question = self._question
        self._ask(None, "")
        if question is None or time.monotonic() - question.asked > CONFIRM_WITHIN:
            return self._say("nothing to confirm (a question expires after "
                             f"{CONFIRM_WITHIN:.0f} s); ask again", "error")
        if question.action == "clear":
            removed = 0
            for name in self.storage.list_stored_files(question.target):
                try:
                    self.storage.delete_file(name, question.target)
                    removed += 1
                except FileNotFoundError:
                    pass
            self._say(f"cleared {question.target}: deleted {removed} entries", "ok")
        else:
            info = self._lock_info(question.target)
            if info is None:
                self._say(f"lock {question.target} was already gone", "info")
            elif info.token != question.token or not (info.stale or question.forced):
                self._say(f"lock {question.target} changed since you asked (now held by "
                          f"{info.holder}, {'stale' if info.stale else 'fresh'}); nothing "
                          "broken, look again", "error")
            elif isinstance(self.storage, BaseLockingStorage) and \
                    self.storage.break_lock(question.target):
                self._say(f"broke lock {question.target} of {info.holder}", "ok")
            else:
                self._say(f"lock {question.target} changed meanwhile; nothing broken", "error")
        self.refresh()

    def _ask(self, question: _Question | None, text: str) -> None:
        """Show (or with None, withdraw) a question awaiting Confirm."""
        self._question = question
        shown = "" if question is not None else "none"
        self.confirm_button.layout.display = self.cancel_button.layout.display = shown
        self._say(text, "info")

    def _say(self, text: str, tone: str = "info") -> None:
        self.status.value = f'<span style="color: {_TONES[tone]}">{html.escape(text)}</span>'

    def _button(self, label: str, action: Callable[[], object],
                style: str = "") -> widgets.Button:
        button = widgets.Button(description=label, button_style=style,
                                layout=widgets.Layout(width="auto"))
        button.on_click(self._guarded(action))
        return button

    def _guarded(self, action: Callable[[], object]) -> Callable[..., None]:
        """``action`` as a click handler: under the panel's lock, errors shown."""
        def run(*_: object) -> None:
            with self._guard:
                try:
                    action()
                except Exception as exc:
                    self._say(f"{type(exc).__name__}: {exc}", "error")
        return run

    # -- refreshing in the background -------------------------------------------------

    def _start(self, every: float) -> None:
        ref, stop = weakref.ref(self), self._stop

        def loop() -> None:
            while not stop.wait(every):
                panel = ref()
                if panel is None:
                    return
                panel.refresh()
                del panel

        self._thread = threading.Thread(target=loop, name="labcache-monitor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop refreshing and close the panel and its parts."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        for child in getattr(self, "children", ()):
            for part in getattr(child, "children", ()):
                part.close()
            child.close()
        super().close()


# -- helpers ------------------------------------------------------------------------------


def _open(storage: BaseStorage | str | None) -> BaseStorage:
    from ..storage import default_storage, open_storage

    if storage is None:
        return default_storage()
    return open_storage(storage) if isinstance(storage, str) else storage


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str],
           empty: str) -> str:
    """An HTML table; every cell is escaped (names, arguments, users are not ours)."""
    if not rows:
        return f"<i>{html.escape(empty)}</i>"
    head = "".join(f"<th>{html.escape(title)}</th>" for title in columns)
    body = "".join(f'<tr class="{html.escape(css)}">'
                   + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row, css in zip(rows, classes, strict=True))
    return f'{_STYLE}<table class="labcache-table"><tr>{head}</tr>{body}</table>'


def _entry_class(row: EntryView) -> str:
    """Rows this kernel would refuse to load (unsigned, untrusted) stand out."""
    return "labcache-entry labcache-refused" if row.refused else "labcache-entry"


def _stats_text() -> str:
    def count(name: str) -> int:
        return int(getattr(stats, name, 0))

    saved = duration_text(float(getattr(stats, "seconds_saved", 0.0)))
    why = getattr(stats, "last_recompute", "")
    return (f"hits {count('hits')} · misses {count('misses')} · waits {count('waits')} · "
            f"computed {count('computations')} · failed {count('failures')} · "
            f"time saved {saved}" + (f" · last recomputed {why}" if why else ""))
