"""The acquire-or-wait protocol, written once for sync and async callers.

The protocol is a generator that never blocks by itself: it *yields* steps
(storage work, a pause, "run the function now") and a driver carries them
out.  ``run_sync`` does each step in the calling thread; ``run_async`` runs
storage work in a worker thread and pauses with ``asyncio.sleep``, so a
waiting coroutine never blocks its event loop.  One call goes:

1. look the key up; a hit is loaded and returned;
2. try the lock; the winner looks again, computes, stores, and releases the
   lock in ``finally``;
3. a loser waits while the lock is held and fresh, then loads the entry;
4. if the holder failed, the waiters raise its recorded exception; if it
   died (stale lock) or left nothing, one of them takes the lock over;
5. after ``wait_timeout`` a waiter raises ``LockTimeout`` naming the holder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import entry
from .base import BaseLockingStorage, BaseStorage, LockInfo
from .errors import CorruptEntryError, LabcacheError, LockTimeout, StorageError
from .locks import MISSED_BEATS, RecordLockingStorage, this_host
from .report import Reporter, reporter_for

__all__ = ["MISS", "CacheWarning", "Call", "load_entry", "lock_name_for", "run_async", "run_sync"]

logger = logging.getLogger("labcache")

#: Longest pause between two looks at a lock whose holder is on this host.
_SAME_HOST_POLL = 0.1
#: Context holding the last failure of each key, for waiters to re-raise.
FAILURES_CONTEXT = "labcache-failures"


class CacheWarning(UserWarning):
    """A cache problem that labcache worked around (a bad entry, a storage
    outage); the call still returned a correct result."""


class _Miss:
    def __repr__(self) -> str:
        return "MISS"


MISS: Any = _Miss()


@dataclass
class Call:
    """Everything the protocol needs to know about one call."""

    storage: BaseStorage
    context: str
    key: str
    function: str
    ttl: float
    heartbeat_interval: float | None
    wait_timeout: float
    expires_after: float | None
    on_storage_error: str
    metadata: Callable[[], dict[str, Any]]  # built only when an entry is stored
    reporter: Reporter
    force: bool = False
    looked: bool = False  # the caller already found no entry
    mmap_mode: str | None = None
    computed: bool = False
    value: Any = None
    started: float = field(default_factory=time.time)

    @property
    def lock_name(self) -> str:
        return lock_name_for(self.context, self.key)


def lock_name_for(context: str, key: str) -> str:
    """The lock that guards one key: readable in listings, short enough for
    any file system (the context is cut, the key never)."""
    return f"{context[:140]}.{key}"


# -- steps the protocol yields --------------------------------------------------


@dataclass
class _Op:
    """Blocking storage work."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass
class _Pause:
    """Wait a little for the lock to change."""

    storage: BaseLockingStorage
    lock_name: str
    seconds: float


_COMPUTE = object()

Protocol = Generator[Any, Any, Any]


def run_sync(call: Call, func: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
    """Drive the protocol in this thread."""
    steps = acquire_or_wait(call)
    sent: Any = None
    thrown: BaseException | None = None
    while True:
        try:
            step = steps.throw(thrown) if thrown is not None else steps.send(sent)
        except StopIteration as stop:
            return stop.value
        sent, thrown = None, None
        try:
            if step is _COMPUTE:
                sent = func(*args, **kwargs)
            elif isinstance(step, _Pause):
                step.storage._wait_for_change(step.lock_name, step.seconds)
            else:
                sent = _storage_op(step)
        except BaseException as exc:  # handed to the protocol, which re-raises
            thrown = exc


async def run_async(call: Call, func: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    """Drive the protocol from a coroutine without blocking the event loop."""
    import asyncio  # only async callers pay for importing asyncio

    steps = acquire_or_wait(call)
    sent: Any = None
    thrown: BaseException | None = None
    while True:
        try:
            step = steps.throw(thrown) if thrown is not None else steps.send(sent)
        except StopIteration as stop:
            return stop.value
        sent, thrown = None, None
        try:
            if step is _COMPUTE:
                sent = await func(*args, **kwargs)
            elif isinstance(step, _Pause):
                await _pause_async(step)
            else:
                sent = await asyncio.to_thread(_storage_op, step)
        except BaseException as exc:
            thrown = exc


async def _pause_async(step: _Pause) -> None:
    import asyncio

    if type(step.storage)._wait_for_change is BaseLockingStorage._wait_for_change:
        await asyncio.sleep(step.seconds)
    else:  # the backend can be woken (pub/sub): let it block a worker thread
        await asyncio.to_thread(step.storage._wait_for_change, step.lock_name, step.seconds)


def _storage_op(op: _Op) -> Any:
    try:
        return op.fn(*op.args)
    except LabcacheError:
        raise
    except (OSError, ConnectionError) as exc:
        raise StorageError(f"storage failed: {type(exc).__name__}: {exc}") from exc


# -- the protocol ---------------------------------------------------------------------


def acquire_or_wait(call: Call) -> Protocol:
    """The whole protocol for one call, with storage outages handled."""
    try:
        return (yield from _protocol(call))
    except StorageError as exc:
        return (yield from _outage(call, exc))
    finally:
        call.reporter.finished()


def _outage(call: Call, exc: StorageError) -> Protocol:
    """The storage failed: raise, or warn and return an uncached result."""
    if call.on_storage_error == "raise":
        raise exc
    warnings.warn(
        f"{call.function}: the cache storage failed ({exc}); returning an "
        "uncached result. Pass on_storage_error='raise' to fail instead",
        CacheWarning, stacklevel=5,
    )
    if call.computed:
        return call.value
    return (yield _COMPUTE)


def _protocol(call: Call) -> Protocol:
    if not (call.force or call.looked):
        found = yield _Op(load, (call,))
        if found is not MISS:
            return found
    storage = call.storage
    if not isinstance(storage, BaseLockingStorage):
        return (yield from _compute_and_store(call))
    while True:
        won = yield _Op(storage.try_acquire_lock,
                        (call.lock_name, call.ttl, call.heartbeat_interval))
        if won:
            return (yield from _compute_holding(call, storage))
        holder = yield from _wait_while_held(call, storage)
        if not call.force:
            found = yield _Op(load, (call,))
            if found is not MISS:
                return found
        failure = yield _Op(read_failure, (call, holder))
        if failure is not None:
            call.reporter.failed(failure)
            raise failure
        # Free or stale and nothing stored: take the computation over.


def _compute_holding(call: Call, storage: BaseLockingStorage) -> Protocol:
    try:
        if not call.force:  # someone may have stored it just before we won
            found = yield _Op(load, (call,))
            if found is not MISS:
                return found
        return (yield from _compute_and_store(call, storage))
    finally:
        _release(storage, call.lock_name)


def _compute_and_store(call: Call, storage: BaseLockingStorage | None = None) -> Protocol:
    call.reporter.computing()
    began = time.monotonic()
    try:
        value = yield _COMPUTE
    except Exception as exc:
        call.reporter.failed(exc)
        if storage is not None:
            yield _Op(record_failure, (call, storage, exc))
        raise
    call.computed, call.value = True, value
    seconds = time.monotonic() - began
    try:
        yield _Op(store, (call, value, seconds))
    except StorageError:
        raise
    except Exception as exc:  # the result cannot be pickled: tell the waiters too
        call.reporter.failed(exc)
        if storage is not None:
            yield _Op(record_failure, (call, storage, exc))
        raise
    call.reporter.computed(seconds)
    return value


def _wait_while_held(call: Call, storage: BaseLockingStorage) -> Protocol:
    """Pause while the lock is held by the same fresh holder; return that holder."""
    began = time.monotonic()
    held, first = yield _Op(observe_lock, (storage, call.lock_name))
    poll, now = getattr(storage, "wake_poll_interval", 0.05), first
    while held:
        waited = time.monotonic() - began
        if waited >= call.wait_timeout:
            who = first.holder if first is not None else "another process"
            raise LockTimeout(
                f"{call.function}: waited {waited:.0f} s (wait_timeout) for {who} "
                f"holding lock {call.lock_name!r}; this call holds nothing. Raise "
                "wait_timeout, or if that holder is gone, break the lock with "
                "storage.break_lock(name)"
            )
        call.reporter.waiting(first, waited)
        pause = min(_until_stale(now, poll), call.wait_timeout - waited)
        yield _Pause(storage, call.lock_name, pause)
        held, now = yield _Op(observe_lock, (storage, call.lock_name))
        if first is not None and now is not None and now.token != first.token:
            break  # the holder we waited for is gone; a new one took over
    return first


def _until_stale(info: LockInfo | None, poll: float) -> float:
    """How long to pause: ``poll``, or less when the holder's beats are due to
    run out sooner, so a dead holder is taken over within ~3 beats even on a
    backend with a long poll (Redis waits on pub/sub for up to 1 s).  A holder
    on this host is looked at every 0.1 s at least: its death (a gone pid)
    shows at once, without waiting for its beats."""
    if info is None:
        return poll
    if info.host == this_host():
        poll = min(poll, _SAME_HOST_POLL)
    if not info.heartbeat_interval:
        return poll
    due = info.heartbeat + MISSED_BEATS * info.heartbeat_interval - time.time()
    return min(poll, max(due, poll / 10))


def observe_lock(storage: BaseLockingStorage, name: str) -> tuple[bool, LockInfo | None]:
    """(held and fresh, holder info if the backend can tell)."""
    if type(storage).lock_info is BaseLockingStorage.lock_info:
        return storage._is_locked(name), None
    info = storage.lock_info(name)
    return (info is not None and not info.stale), info


def _release(storage: BaseLockingStorage, name: str) -> None:
    try:
        storage.release_lock(name)
    except Exception as exc:  # the lock will go stale by itself
        logger.warning("could not release lock %s: %s", name, exc)


# -- storage work ------------------------------------------------------------------------


def load(call: Call) -> Any:
    """The stored value of this call, or MISS (a bad entry is removed)."""
    return load_entry(call.storage, call.key, call.context, call.function,
                      call.expires_after, call.reporter, call.mmap_mode)


def load_entry(storage: BaseStorage, key: str, context: str, function: str,
               expires_after: float | None = None, reporter: Reporter | None = None,
               mmap_mode: str | None = None) -> Any:
    """The stored value of ``key``, or MISS; a bad entry is removed with a
    ``CacheWarning``.  This is the whole of a cache hit, so it stays lean."""
    began = time.monotonic()
    try:
        if mmap_mode is not None and hasattr(storage, "open_mapped"):
            source = storage.open_mapped(key, context, mmap_mode)
            if source is None:
                return MISS
            value, header = entry.load(source, copy_buffers=False)
        else:
            source = _find_entry(storage, key, context)
            if source is None:
                return MISS
            try:
                value, header = entry.load(source)
            finally:
                if hasattr(source, "close"):
                    source.close()
        if header.key is not None and header.key != key:
            # Signed content is not enough: an entry copied over another key
            # would hand back a genuine result of a different call.
            raise CorruptEntryError(f"it holds the result of key {header.key}")
    except CorruptEntryError as exc:
        warnings.warn(f"{function}: cached entry {key} is unusable ({exc}); "
                      "recomputing it", CacheWarning, stacklevel=2)
        with contextlib.suppress(OSError):
            storage.delete_file(key, context)
        return MISS
    if expires_after is not None and time.time() - header.created > expires_after:
        return MISS
    (reporter or reporter_for(function)).loaded(time.monotonic() - began,
                                                header.compute_seconds)
    return value


@contextlib.contextmanager
def open_entry(storage: BaseStorage, key: str, context: str) -> Iterator[Any]:
    """The stored entry as bytes or an open binary file (closed on exit),
    or None if there is none."""
    found = _find_entry(storage, key, context)
    try:
        yield found
    finally:
        if hasattr(found, "close"):
            found.close()


def _find_entry(storage: BaseStorage, key: str, context: str) -> Any:
    ours = isinstance(storage, RecordLockingStorage)
    if not ours and not storage.check_if_exists(key, context):
        return None  # a seed-style storage may raise anything for a missing entry
    try:
        if ours:
            found = storage._open_for_load(key, context)  # type: ignore[attr-defined]
        else:
            found = storage.get_file_by_hashcode(key, context)
    except (FileNotFoundError, KeyError):
        return None
    if found is None or isinstance(found, (bytes, bytearray, memoryview)) or hasattr(found, "read"):
        return found
    return storage.download_file(key, context)


def store(call: Call, value: Any, seconds: float) -> None:
    """Encode and upload the value, then forget any earlier failure of this key."""
    meta = dict(call.metadata(), created=time.time(), compute_seconds=round(seconds, 6))
    encoded = entry.encode(value, meta)
    call.storage.upload_file(encoded, call.key, call.context)
    if call.storage.check_if_exists(call.key, FAILURES_CONTEXT):
        with contextlib.suppress(FileNotFoundError):
            call.storage.delete_file(call.key, FAILURES_CONTEXT)


def record_failure(call: Call, storage: BaseLockingStorage, error: BaseException) -> None:
    """Leave the holder's exception where the waiters on its lock will look.

    Never raises: if the record cannot be written the waiters recompute,
    which is slower but still correct.
    """
    try:
        info = storage.lock_info(call.lock_name)
        own = None
        if isinstance(storage, RecordLockingStorage):
            own = storage.held_token(call.lock_name)
        if own is not None and (info is None or info.token != own):
            return  # our lock was taken over: its waiters wait on someone else now
        meta = {"token": info.token if info else "", "failed_at": time.time(),
                "pid": os.getpid(), "function": call.function}
        try:
            encoded = entry.encode(error, meta)
        except LabcacheError:
            from .errors import HolderFailedError

            shipped = HolderFailedError(f"{type(error).__qualname__}: {error}")
            encoded = entry.encode(shipped, meta)
        storage.upload_file(encoded, call.key, FAILURES_CONTEXT)
    except Exception as exc:
        logger.warning("could not record the failure of %s: %s", call.function, exc)


def read_failure(call: Call, holder: LockInfo | None) -> BaseException | None:
    """The recorded exception of the holder this call waited on, if any."""
    try:
        with open_entry(call.storage, call.key, FAILURES_CONTEXT) as source:
            if source is None:
                return None
            error, header = entry.decode(source)
    except CorruptEntryError:
        return None
    meta = header.get("meta") or {}
    if holder is not None and holder.token:
        ours = meta.get("token") == holder.token
    else:  # the backend cannot name holders: trust failures since we started
        ours = meta.get("failed_at", 0.0) >= call.started - 1.0
    if not ours or not isinstance(error, BaseException):
        return None
    if hasattr(error, "add_note"):
        error.add_note(f"(raised by the holder computing {call.function}, pid {meta.get('pid')})")
    return error
