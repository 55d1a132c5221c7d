"""Moving one call's entries between the protocol and a storage.

Loading a hit (the whole of a cache hit, kept lean), storing a computed
value, and the failure records a holder leaves for the callers waiting on
it.  Nothing here waits or takes a lock: that is ``protocol``'s job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import entry, signing
from .base import BaseLockingStorage, BaseStorage, LockInfo
from .call import Call
from .errors import CorruptEntryError, LabcacheError, warn
from .report import Reporter, reporter_for

__all__ = ["FAILURES_CONTEXT", "MISS", "load", "load_entry", "read_failure", "record_failure",
           "store"]

logger = logging.getLogger("labcache")

#: Context holding the last failure of each key, for waiters to re-raise.
FAILURES_CONTEXT = "labcache-failures"


class _Miss:
    def __repr__(self) -> str:
        return "MISS"


MISS: Any = _Miss()


def load(call: Call) -> Any:
    """The stored value of this call, or MISS (a bad entry is removed).

    A signing key that cannot be used fails here, before anything is
    computed, rather than when the result is stored.
    """
    if signing.signing_key_set():
        signing.current_signer()  # one stat while the file is unchanged
    options = call.options
    return load_entry(call.storage, call.key, call.context, call.function,
                      options.expires_after, call.reporter, options.mmap_mode,
                      options.stale_after, call.on_stale)


def load_entry(storage: BaseStorage, key: str, context: str, function: str,
               expires_after: float | None = None, reporter: Reporter | None = None,
               mmap_mode: str | None = None, stale_after: float | None = None,
               on_stale: Callable[[], object] | None = None, retry: bool = True) -> Any:
    """The stored value of ``key``, or MISS; a bad entry is removed with a
    ``CacheWarning``.  This is the whole of a cache hit, so it stays lean.

    A bad *local copy* of a network entry is only dropped, and the entry
    fetched again once.  An entry older than ``stale_after`` is returned
    after ``on_stale()`` was called (it starts a background refresh).
    """
    began = time.monotonic()
    try:
        if mmap_mode is not None:
            source = storage.open_mapped(key, context, mmap_mode)
            if source is None:
                return MISS
            value, header = entry.load(source, copy_buffers=False)
        else:
            source = storage.open_entry(key, context)
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
        if retry and storage.forget_local_copy(key, context):
            logger.info("%s: local copy of %s was unusable (%s); fetching it again",
                        function, key, exc)
            return load_entry(storage, key, context, function, expires_after, reporter,
                              mmap_mode, stale_after, on_stale, retry=False)
        warn(f"{function}: cached entry {key} is unusable ({exc}); recomputing it")
        with contextlib.suppress(OSError):
            storage.delete_file(key, context)
        return MISS
    if expires_after is not None and time.time() - header.created > expires_after:
        return MISS
    if stale_after is not None and on_stale is not None and \
            time.time() - header.created > stale_after:
        try:
            on_stale()
        except Exception as exc:  # the stored value is still right to return
            logger.warning("%s: could not start refreshing a stale entry: %s", function, exc)
    (reporter or reporter_for(function)).loaded(time.monotonic() - began,
                                                header.compute_seconds)
    return value


@contextlib.contextmanager
def _opened(storage: BaseStorage, key: str, context: str) -> Iterator[Any]:
    """The stored entry as bytes or an open binary file (closed on exit),
    or None if there is none."""
    found = storage.open_entry(key, context)
    try:
        yield found
    finally:
        if hasattr(found, "close"):
            found.close()


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
        with _opened(call.storage, call.key, FAILURES_CONTEXT) as source:
            if source is None:
                return None
            error, header = entry.decode(source)
    except CorruptEntryError:
        return None
    meta = header.meta
    if holder is not None and holder.token:
        ours = meta.get("token") == holder.token
    else:  # the backend cannot name holders: trust failures since we started
        ours = meta.get("failed_at", 0.0) >= call.started - 1.0
    if not ours or not isinstance(error, BaseException):
        return None
    if hasattr(error, "add_note"):
        error.add_note(f"(raised by the holder computing {call.function}, pid {meta.get('pid')})")
    return error
