"""S3Storage's side of local copies (see ``_local_copy.py``): which copy is
current, asked of S3 with the copy's ETag, and fetching a new version.

* A hit on a big copy (over 1 MiB) reads the copy from disk while a
  ``HEAD`` with ``If-None-Match: <ETag>`` is on the way (``CheckedCopy``
  waits for its answer before anything is unpickled), so the round trip
  hides behind the read.
* Otherwise one ``GET`` with ``If-None-Match`` answers 304 (the copy is
  current) or brings the new version, which is kept as the new copy.
"""

from __future__ import annotations

import os
from typing import Any

from botocore.exceptions import ClientError

from .._compress import open_frame
from ._local_copy import CheckedCopy, LocalCopies, copy_stream
from ._s3_errors import missing, not_modified
from ._s3_streams import Body

__all__ = ["current_copy", "open_for_load"]

#: Local copies above this size are read while their version is checked.
READ_WHILE_CHECKING = 1 << 20
# What a conditional GET can answer instead of the entry.
_CURRENT, _MISSING = object(), object()


def open_for_load(storage: Any, copies: LocalCopies, hashcode: str, context: str) -> Any:
    """The entry for a hit (bytes or a binary file), from the local copy
    when it is still the stored version."""
    held = copies.versions(context, hashcode)
    fd = copies.open(context, hashcode, held[0]) if held else None
    if fd is not None and os.fstat(fd).st_size > READ_WHILE_CHECKING:
        check = _checker(storage).submit(is_current, storage, hashcode, context, held[0])
        return CheckedCopy(os.fdopen(fd, "rb"), check)
    if fd is not None:
        os.close(fd)
    found = current_copy(storage, copies, hashcode, context)
    return copies.as_source(found) if isinstance(found, int) else found


def current_copy(storage: Any, copies: LocalCopies, hashcode: str, context: str) -> Any:
    """A read descriptor on the copy of the entry's current version (fetched
    if needed), or the entry's stream from S3 if the copy cannot be written;
    ``FileNotFoundError`` if there is no entry."""
    key = storage._entry_key(hashcode, context)
    held = copies.versions(context, hashcode)
    response = _get(storage, key, held[0] if held else None)
    if response is _MISSING:
        copies.forget(context, hashcode)
        raise storage._not_found(key)
    if response is _CURRENT:
        fd = copies.open(context, hashcode, held[0])
        if fd is not None:
            return fd
        return current_copy(storage, copies, hashcode, context)  # evicted meanwhile

    def fill(target: Any) -> None:
        with open_frame(Body(storage, key, response)) as stream:
            copy_stream(stream, target)

    fd = copies.keep_or_none(context, hashcode, str(response["ETag"]), fill)
    return storage.get_file_by_hashcode(hashcode, context) if fd is None else fd


def _get(storage: Any, key: str, etag: str | None) -> Any:
    """GET the entry, unless ``etag`` (a copy held) is still its version:
    the response, or ``_CURRENT``, or ``_MISSING``."""
    with storage._errors("get_object s3://{}/{}", storage.bucket, key):
        try:
            return storage._s3().get_object(Bucket=storage.bucket, Key=key,
                                            **({"IfNoneMatch": etag} if etag else {}))
        except ClientError as exc:
            if missing(exc):
                return _MISSING
            if etag and not_modified(exc):
                return _CURRENT
            raise


def is_current(storage: Any, hashcode: str, context: str, etag: str) -> bool:
    """Whether the stored entry is still the version ``etag`` (one HEAD)."""
    key = storage._entry_key(hashcode, context)
    with storage._errors("head_object s3://{}/{}", storage.bucket, key):
        try:
            storage._s3().head_object(Bucket=storage.bucket, Key=key, IfNoneMatch=etag)
        except ClientError as exc:
            if not_modified(exc):
                return True
            if missing(exc):
                return False
            raise
    return False  # 200: another version


def _checker(storage: Any) -> Any:
    """The storage's threads for version checks beside reads of copies."""
    with storage._client_guard:
        pool = storage.__dict__.get("_copy_checks")
        if pool is None or storage.__dict__.get("_copy_checks_pid") != os.getpid():
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(4, thread_name_prefix="labcache-s3-check")
            storage._copy_checks, storage._copy_checks_pid = pool, os.getpid()
        return pool
