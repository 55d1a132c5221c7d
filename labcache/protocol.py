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

Every call driven here (``run_sync``, ``run_async``, ``refresh_holding``)
ends in ``_finished``: a call that stored an entry then runs
``_after_store`` (eviction past ``max_size``), once its lock is given back.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from .base import BaseLockingStorage, LockInfo
from .call import Call
from .errors import LabcacheError, LockTimeout, ReentrantCallError, StorageError, warn
from .lock_record import this_host
from .locks import MISSED_BEATS
from .reentry import current_owner, holder_of
from .reentry import holding as _holding
from .shield import Attempt, shielded
from .transfer import MISS, load, read_failure, record_failure, store

__all__ = ["refresh_holding", "run_async", "run_sync"]

logger = logging.getLogger("labcache")

#: Longest pause between two looks at a lock whose holder is on this host.
_SAME_HOST_POLL = 0.1


# -- steps the protocol yields --------------------------------------------------


@dataclass
class _Op:
    """Blocking storage work.

    With an ``attempt`` (taking a lock) the driver runs it through
    ``attempt.run``, which ties its result to the protocol's ``settle``.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    attempt: Attempt | None = None


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
    return _drive(_finished(call, acquire_or_wait(call)), func, args, kwargs)


def refresh_holding(call: Call, func: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    """Recompute and store a call whose lock this process already holds (a
    background refresh of a stale entry), releasing the lock at the end."""
    call.force = True
    storage = call.storage
    steps = _compute_holding(call, storage) if isinstance(storage, BaseLockingStorage) \
        else _compute_and_store(call)
    return _drive(_finished(call, steps), func, args, kwargs)


def _drive(steps: Protocol, func: Callable[..., Any], args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> Any:
    sent: Any = None
    thrown: BaseException | None = None
    try:
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
                    step.storage.wait_for_release(step.lock_name, step.seconds)
                elif step.attempt is None:
                    sent = _storage_op(step)
                else:  # out of reach of a signal handler's KeyboardInterrupt
                    sent = shielded(step.attempt.run, _storage_op, step)
            except BaseException as exc:  # handed to the protocol, which re-raises
                thrown = exc
    finally:
        # A KeyboardInterrupt that lands between two steps (outside the try
        # above) still runs the protocol's cleanup: its lock is released.
        steps.close()


async def run_async(call: Call, func: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    """Drive the protocol from a coroutine without blocking the event loop."""
    import asyncio  # only async callers pay for importing asyncio

    steps = _finished(call, acquire_or_wait(call))
    sent: Any = None
    thrown: BaseException | None = None
    try:
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
                elif step.attempt is None:
                    sent = await asyncio.to_thread(_storage_op, step)
                else:  # a cancel here leaves the thread to finish, then settle
                    sent = await asyncio.to_thread(step.attempt.run, _storage_op, step)
            except BaseException as exc:  # a cancel too: the protocol cleans up
                thrown = exc
    finally:
        steps.close()


async def _pause_async(step: _Pause) -> None:
    import asyncio

    if step.storage.wakes_waiters:  # woken by a release (pub/sub): block a worker thread
        await asyncio.to_thread(step.storage.wait_for_release, step.lock_name, step.seconds)
    else:
        await asyncio.sleep(step.seconds)


def _storage_op(op: _Op) -> Any:
    try:
        return op.fn(*op.args)
    except LabcacheError:
        raise
    except (OSError, ConnectionError) as exc:
        raise StorageError(f"storage failed: {type(exc).__name__}: {exc}") from exc


# -- the protocol ---------------------------------------------------------------------


def _finished(call: Call, steps: Protocol) -> Protocol:
    """``steps``, then what follows a stored entry; the one way every
    driven call ends, whoever computed it (a call, a refresh, a background
    refresh of a stale entry, a ``%%cache`` cell)."""
    value = yield from steps
    if call.stored:  # after the lock is released: waiters need not wait for this
        yield _Op(_after_store, (call,))
    return value


def _after_store(call: Call) -> None:
    """Keep the function's entries under ``max_size``: the least recently
    used go, never the one just stored.  A failure here only warns."""
    max_size = call.options.max_size
    if max_size is None:
        return
    from .eviction import evict

    try:
        evict(call.storage, call.context, max_size=max_size, keep=(call.key,))
    except Exception as exc:
        warn(f"{call.function}: could not keep the cache under max_size: {exc}")


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
    if call.options.on_storage_error == "raise":
        raise exc
    warn(f"{call.function}: the cache storage failed ({exc}); returning an "
         "uncached result. Pass on_storage_error='raise' to fail instead")
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
        _refuse_reentry(call, storage)
        won, value = yield from _compute_if_won(call, storage)
        if won:
            return value
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


def _compute_if_won(call: Call, storage: BaseLockingStorage) -> Protocol:
    """Try the lock; if won, compute under it.  Returns (won, value).

    The lock is given back by ``attempt.settle()`` in ``finally``, which also
    covers an interruption before the acquisition's result reached this
    generator (an asyncio cancel while it ran in a thread, a
    KeyboardInterrupt, ``close()``): a lock won then is released as soon as
    the thread that took it returns.
    """
    name = call.lock_name
    attempt = Attempt(functools.partial(_undo_acquire, storage, name))
    try:
        won = yield _Op(storage.try_acquire_lock,
                        (name, call.options.ttl, call.options.heartbeat_interval), attempt)
        if not won:
            return False, None
        with _holding(storage, name):
            if not call.force:  # someone may have stored it just before we won
                found = yield _Op(load, (call,))
                if found is not MISS:
                    return True, found
            return True, (yield from _compute_and_store(call, storage))
    finally:
        attempt.settle()


def _compute_holding(call: Call, storage: BaseLockingStorage) -> Protocol:
    """Compute under a lock this process already took (a background refresh),
    releasing it at the end whatever happens."""
    try:
        with _holding(storage, call.lock_name):
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
    call.stored = True
    call.reporter.computed(seconds)
    return value


def _refuse_reentry(call: Call, storage: BaseLockingStorage) -> None:
    """Raise at once if this thread or task already holds the call's lock."""
    if holder_of(storage, call.lock_name) == current_owner():
        raise ReentrantCallError(
            f"{call.function} was called again with the same arguments (key "
            f"{call.key[:12]}) while this same thread or task is computing that key; it "
            "would wait for itself. A cached function cannot recurse into its own key: "
            "call it with other arguments, or call its __wrapped__ function inside"
        )


def _wait_while_held(call: Call, storage: BaseLockingStorage) -> Protocol:
    """Pause while the lock is held by the same fresh holder; return that holder."""
    began = time.monotonic()
    held, first = yield _Op(observe_lock, (storage, call.lock_name))
    poll, now = storage.wake_poll_interval, first
    while held:
        waited = time.monotonic() - began
        if waited >= call.options.wait_timeout:
            who = first.holder if first is not None else "another process"
            raise LockTimeout(
                f"{call.function}: waited {waited:.0f} s (wait_timeout) for {who} "
                f"holding lock {call.lock_name!r}; this call holds nothing. Raise "
                "wait_timeout, or if that holder is gone, break the lock with "
                "storage.break_lock(name)"
            )
        call.reporter.waiting(first, waited)
        pause = min(_until_stale(now, poll), call.options.wait_timeout - waited)
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
    if not storage.names_holders:
        return storage._is_locked(name), None
    info = storage.lock_info(name)
    return (info is not None and not info.stale), info


def _undo_acquire(storage: BaseLockingStorage, name: str, won: object) -> None:
    if won:
        _release(storage, name)


def _release(storage: BaseLockingStorage, name: str) -> None:
    try:
        storage.release_lock(name)
    except Exception as exc:  # the lock will go stale by itself
        logger.warning("could not release lock %s: %s", name, exc)
