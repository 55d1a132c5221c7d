"""Lock semantics written once for every labcache backend.

A backend only supplies six primitives on a small lock record (create if
absent, read, compare-and-swap, compare-and-delete, touch, list); this module
turns them into the seed's ``try_acquire_lock`` / ``release_lock`` /
``_is_locked`` plus ``lock_info``, ``list_locks`` and ``break_lock``:

* every acquisition carries a random token, and only the owner of that token
  releases the lock, so a holder whose lock was taken over cannot delete the
  new holder's lock;
* a heartbeat thread keeps a held lock fresh past its ``ttl``;
* a lock is stale when its holder stopped beating for 3 intervals, when it
  outlived ``ttl`` without a heartbeat, or at once when the holder's process
  on this very host is gone; a record that is not a valid ``LockRecord``
  (not JSON, a field missing or of the wrong type) names no holder and is
  stale once it is ``UNREADABLE_LOCK_TTL`` old;
* a holder that finds its lock gone, or taken although it never went stale,
  says so (deleted by hand, evicted by the storage), not that it was taken over;
* a stale lock is taken over by compare-and-swap, so of many processes that
  see it stale at the same moment exactly one wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from . import entry
from .base import BaseLockingStorage, LockInfo
from .lock_record import BOOT_ID, LockRecord, check_lock_times, this_host, this_user
from .names import check_name

__all__ = ["EntryStat", "LockRecord", "RawLock", "RecordLockingStorage", "check_lock_times",
           "this_host", "this_user"]

logger = logging.getLogger("labcache")

#: Beats a holder may miss before its lock counts as stale.
MISSED_BEATS = 3
#: Age after which a lock record nobody can parse counts as stale.
UNREADABLE_LOCK_TTL = 3600.0
#: Why a held lock can disappear, for the warning that says it did.
_VANISHED = ("deleted by hand, e.g. with labcache unlock, or evicted by the storage, e.g. "
             "by a Redis maxmemory-policy other than noeviction; another process may "
             "compute the same key meanwhile")


@dataclass(frozen=True, order=True)
class EntryStat:
    """One entry as a listing sees it: name, size in bytes, modification time
    and last access time (Unix seconds), None where the backend cannot tell
    cheaply.  ``accessed`` drives least-recently-used eviction."""

    name: str
    size: int | None
    modified: float | None
    accessed: float | None = None

    @property
    def last_used(self) -> float:
        """The later of last access and modification (0 if neither is known):
        what least-recently-used eviction sorts by."""
        return max(self.accessed or 0.0, self.modified or 0.0)


@dataclass(frozen=True)
class RawLock:
    """A lock as a backend read it.

    ``beat`` is when the lock was created or last touched, by the storage's
    clock where it has one; ``version`` is the backend's handle for
    compare-and-swap (a content digest, an ETag, the token).
    """

    data: bytes
    beat: float
    version: str


class _Heartbeat(threading.Thread):
    """Touches one held lock every ``interval`` seconds until stopped."""

    def __init__(self, storage: RecordLockingStorage, name: str, version: str,
                 interval: float, started: float) -> None:
        super().__init__(name=f"labcache-heartbeat-{name}", daemon=True)
        self.storage, self.lock_name, self.version = storage, name, version
        self.interval = interval
        self.stopped = threading.Event()
        self.lost = False  # found the lock no longer ours, and said so
        #: Until this ``time.monotonic()`` the lock surely has not gone stale:
        #: its last beat (counted from before the request) plus the missed beats.
        self.fresh_until = started + MISSED_BEATS * interval

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            started = time.monotonic()
            try:
                version = self.storage._lock_touch(self.lock_name, self.version)
            except Exception as exc:  # a network blip: try again next beat
                logger.warning("heartbeat for lock %s failed: %s", self.lock_name, exc)
                continue
            if version is None:
                self.storage._report_lost(self.lock_name, started > self.fresh_until,
                                          "stopping its heartbeat")
                self.lost = True
                return
            self.version = version
            self.fresh_until = started + MISSED_BEATS * self.interval

    def stop(self) -> None:
        self.stopped.set()
        # ident is None if an interrupt came before start(): nothing to join.
        if self.ident is not None and self is not threading.current_thread():
            self.join()


@dataclass
class _Held:
    token: str
    heartbeat: _Heartbeat | None
    #: For a lock without heartbeat: until when (``time.monotonic()``) it is fresh.
    fresh_until: float

    def could_be_stale(self) -> bool:
        """Whether others may have judged this hold stale by now (ignoring
        clock skew, which only matters without heartbeat)."""
        until = self.heartbeat.fresh_until if self.heartbeat else self.fresh_until
        return time.monotonic() > until


class RecordLockingStorage(BaseLockingStorage):
    """Base of labcache's backends: the lock rules on top of six primitives.

    Subclasses implement ``_lock_create``, ``_lock_read``, ``_lock_replace``,
    ``_lock_delete``, ``_lock_touch`` and ``_lock_names`` (and the seed's
    entry methods); everything else is inherited.

    Examples:
        >>> from labcache import LocalStorage
        >>> import tempfile
        >>> store = LocalStorage(tempfile.mkdtemp())
        >>> store.try_acquire_lock("job", ttl=60, heartbeat_interval=5)
        True
        >>> store.lock_info("job").stale
        False
        >>> store.release_lock("job")
    """

    def _init_locks(self) -> None:
        self._held: dict[str, _Held] = {}
        self._held_guard = threading.Lock()
        self._lock_warnings_given = False

    # -- primitives each backend provides ---------------------------------

    @abstractmethod
    def _lock_create(self, name: str, data: bytes) -> str | None:
        """Create the lock record if absent; its version, or None if present."""

    @abstractmethod
    def _lock_read(self, name: str) -> RawLock | None:
        """The lock record, or None if there is none."""

    @abstractmethod
    def _lock_replace(self, name: str, version: str, data: bytes) -> str | None:
        """Replace the record if it is still ``version``; the new version or None."""

    @abstractmethod
    def _lock_delete(self, name: str, version: str) -> bool:
        """Delete the record if it is still ``version``."""

    @abstractmethod
    def _lock_touch(self, name: str, version: str) -> str | None:
        """Refresh the beat if the record is still ``version``; new version or None."""

    @abstractmethod
    def _lock_names(self) -> list[str]:
        """Names of all lock records present."""

    # -- listings for people (widget, CLI); cheap defaults, backends do better --

    def list_contexts(self) -> list[str]:
        """Contexts (one per cached function) that hold entries, sorted."""
        return []

    def describe_entries(self, context: str) -> list[EntryStat]:
        """Every entry of ``context`` with its size and time where cheaply known."""
        return [EntryStat(name, None, None) for name in self.list_stored_files(context)]

    def read_entry_header(self, hashcode: str, context: str) -> entry.Header:
        """An entry's header (metadata, sizes) without loading its payload."""
        from .transfer import open_entry

        with open_entry(self, hashcode, context) as source:
            if source is None:
                raise FileNotFoundError(f"no entry {hashcode!r} in context {context!r}")
            return entry.read_header(source)

    def _open_for_load(self, hashcode: str, context: str) -> Any:
        """The entry for a cache hit: bytes or an open binary file.  Backends
        may return small entries as bytes, which decode with fewer calls."""
        return self.get_file_by_hashcode(hashcode, context)

    def _forget_copy(self, hashcode: str, context: str) -> bool:
        """Drop this machine's local copy of an entry that failed to load;
        True if there was one (the entry is then fetched again, not removed)."""
        return False

    #: Seconds of uncertainty in a ``beat`` reading (S3 times are whole seconds).
    clock_resolution = 0.0

    def _now(self) -> float:
        """The clock ``beat`` is compared with (a backend may use its server's)."""
        return time.time()

    # -- the seed's lock methods ---------------------------------------------

    def try_acquire_lock(
        self, lock_name: str, ttl: int = 3600, heartbeat_interval: int | None = None
    ) -> bool:
        """Take the lock if it is free or stale; returns True if now held.

        With ``heartbeat_interval`` a background thread keeps the lock fresh
        until ``release_lock``.
        """
        check_name(lock_name, "lock name")
        # Before the record's time: our idea of when it may go stale is never late.
        started = time.monotonic()
        record = LockRecord.new(ttl, heartbeat_interval)
        data = record.to_bytes()
        try:
            version = self._lock_create(lock_name, data)
            if version is None:
                version = self._take_over_if_stale(lock_name, data)
            if version is None:
                return False
            self._hold(lock_name, record, version, started)
        except BaseException:
            # Interrupted (KeyboardInterrupt, SystemExit) or failed after the
            # record may already be written: a lock nobody will release must
            # not stay behind, beating or not.
            self._drop(lock_name, record.token)
            raise
        self._warn_once()
        return True

    def release_lock(self, lock_name: str) -> None:
        """Release the lock if this process still owns it; otherwise do nothing."""
        check_name(lock_name, "lock name")
        with self._held_guard:
            held = self._held.pop(lock_name, None)
        if held is None:
            return
        try:
            self._let_go(lock_name, held, quiet=False)
        except BaseException:
            # A KeyboardInterrupt half-way would leave the record (and maybe
            # its beat) behind for 3 beats: finish first, then let it through.
            with contextlib.suppress(Exception):
                self._let_go(lock_name, held, quiet=True)
            raise

    def _is_locked(self, lock_name: str) -> bool:
        """True if the lock exists and is not stale."""
        info = self.lock_info(lock_name)
        return info is not None and not info.stale

    # -- improvements ----------------------------------------------------------

    def lock_info(self, lock_name: str) -> LockInfo | None:
        """Holder, times and staleness of a lock, or None if it is free.

        Examples:
            >>> from labcache import LocalStorage
            >>> import tempfile
            >>> LocalStorage(tempfile.mkdtemp()).lock_info("nobody") is None
            True
        """
        check_name(lock_name, "lock name")
        raw = self._lock_read(lock_name)
        return None if raw is None else self._describe(lock_name, raw)

    def list_locks(self) -> list[LockInfo]:
        """Every lock present, fresh or stale, sorted by name."""
        found, now = [], None
        for name in sorted(self._lock_names()):
            raw = self._lock_read(name)
            if raw is not None:
                # One reading of the storage's clock for the whole listing
                # (on Local each reading creates a file).
                now = now or self._now()
                found.append(self._describe(name, raw, now))
        return found

    def break_lock(self, lock_name: str) -> bool:
        """Remove a lock whoever holds it; True if one was removed.

        Meant for people (the CLI, the widget) clearing a lock they know is
        dead; ``@cached`` itself only ever takes over stale locks.
        """
        check_name(lock_name, "lock name")
        raw = self._lock_read(lock_name)
        if raw is None:
            return False
        with self._held_guard:
            held = self._held.pop(lock_name, None)
        if held is not None and held.heartbeat is not None:
            held.heartbeat.stop()
        removed = self._lock_delete(lock_name, raw.version)
        if removed:
            logger.warning("broke lock %s", lock_name)
        return removed

    def held_token(self, lock_name: str) -> str | None:
        """The token of this process's hold on ``lock_name``, if it holds it."""
        with self._held_guard:
            held = self._held.get(lock_name)
        return held.token if held else None

    def is_stale(self, record: LockRecord | None, beat: float,
                 now: float | None = None) -> bool:
        """Whether a lock with this record, last beating at ``beat``, is dead.

        A beating lock is judged by ``beat`` against ``_now()``, two readings
        of the *storage's* clock (file times, the server's), never by times
        the holder wrote: a holder whose clock is off still beats on time.
        ``clock_resolution`` pads the limit by how coarse that clock is.
        ``now``, a reading of ``_now()`` already taken, saves taking another.
        """
        if record is None:  # unreadable: only its age can retire it
            return (now or self._now()) - beat > UNREADABLE_LOCK_TTL
        if record.host == this_host() and record.boot == BOOT_ID and not _pid_alive(record.pid):
            return True
        if record.heartbeat_interval:
            limit = MISSED_BEATS * record.heartbeat_interval + self.clock_resolution
            return (now or self._now()) - beat > limit
        # Without beats only the holder's own acquisition time says how old
        # the lock is: here a clock skew between hosts shifts the ttl.
        return (now or self._now()) - record.acquired > record.ttl

    # -- internals ---------------------------------------------------------------

    def _take_over_if_stale(self, lock_name: str, data: bytes) -> str | None:
        raw = self._lock_read(lock_name)
        if raw is None:  # released since our create failed: one more try
            return self._lock_create(lock_name, data)
        old = LockRecord.parse(raw.data)
        if not self.is_stale(old, raw.beat):
            return None
        version = self._lock_replace(lock_name, raw.version, data)
        if version is not None:
            who = f"{old.user}@{old.host} pid {old.pid}" if old else "an unreadable record"
            logger.warning("took over stale lock %s from %s", lock_name, who)
        return version

    def _hold(self, lock_name: str, record: LockRecord, version: str, started: float) -> None:
        # Recorded before the beat starts, so an interrupt in between leaves
        # nothing that _drop cannot find.
        held = _Held(record.token, None, started + record.ttl)
        with self._held_guard:
            self._held[lock_name] = held
        if record.heartbeat_interval:
            held.heartbeat = _Heartbeat(self, lock_name, version, record.heartbeat_interval,
                                        started)
            held.heartbeat.start()

    def _let_go(self, lock_name: str, held: _Held, quiet: bool) -> None:
        """Stop the beat of a hold and delete its record if it is still ours."""
        if held.heartbeat is not None:
            held.heartbeat.stop()
        raw = self._lock_read(lock_name)
        record = LockRecord.parse(raw.data) if raw else None
        if raw is None or record is None or record.token != held.token:
            if not quiet and (held.heartbeat is None or not held.heartbeat.lost):
                # (a heartbeat that found it lost said so already)
                self._report_lost(lock_name, held.could_be_stale(), "nothing to release")
            return
        self._lock_delete(lock_name, raw.version)

    def _drop(self, lock_name: str, token: str) -> None:
        """Undo an acquisition that did not complete: the record with ``token``
        (if it was written) and its hold (if it was recorded)."""
        with self._held_guard:
            held = self._held.get(lock_name)
            if held is not None and held.token == token:
                del self._held[lock_name]
            else:
                held = None
        with contextlib.suppress(Exception):
            self._let_go(lock_name, held or _Held(token, None, 0.0), quiet=True)

    def _warn_once(self) -> None:
        """Log ``lock_warnings`` at this storage's first lock (e.g. a Redis
        server that may evict locks): advice only, so a failure is ignored."""
        if self._lock_warnings_given:
            return
        self._lock_warnings_given = True
        try:
            warnings = self.lock_warnings()
        except Exception:
            return
        for text in warnings:
            logger.warning("%s", text)

    def _report_lost(self, lock_name: str, could_be_stale: bool, then: str) -> None:
        """Say truthfully why a lock this process held is no longer its own.

        Only a lock that may have gone stale can have been taken over (or, on
        Redis, have expired); one that was surely fresh was deleted by hand or
        evicted by the storage, and a second process may be computing too.
        """
        try:
            raw = self._lock_read(lock_name)
        except Exception as exc:
            logger.warning("lock %s is no longer held by this process (its record could "
                           "not be read: %s); %s", lock_name, exc, then)
            return
        holder = None if raw is None else self._describe(lock_name, raw).holder
        if could_be_stale:
            what = f"was taken over by {holder}" if holder else "expired or was removed"
            logger.warning("lock %s %s after it went stale; %s", lock_name, what, then)
            return
        taken = f", and {holder} took it although it had not gone stale" if holder else ""
        logger.warning("lock %s disappeared while this process held it (%s)%s; %s",
                       lock_name, _VANISHED, taken, then)

    def _describe(self, name: str, raw: RawLock, now: float | None = None) -> LockInfo:
        record = LockRecord.read(raw.data)
        if isinstance(record, str):
            stale = self.is_stale(None, raw.beat, now)
            return LockInfo(name, "?", "?", 0, "", raw.beat, raw.beat,
                            UNREADABLE_LOCK_TTL, None, stale, problem=record)
        stale = self.is_stale(record, raw.beat, now)
        return LockInfo(name, record.user, record.host, record.pid, record.token,
                        record.acquired, raw.beat, record.ttl,
                        record.heartbeat_interval, stale)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The state letter follows the parenthesized command name.
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
