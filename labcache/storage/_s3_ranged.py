"""Loading a big S3 object in parallel ranged GETs, its parts in order.

One HTTP stream from S3 runs at the speed of one connection; boto3's own
``download_fileobj`` opens several.  ``open_object`` asks for the first
part only (``Range: bytes=0-<part>``); an object bigger than that is read as
a :class:`RangedBody`: the first part streams while the next ones (up to
four ahead) are fetched by a small thread pool, each pinned to the first
response's ETag (``If-Match``), so an object replaced mid-read fails
instead of mixing two versions.  Small objects cost one request, as before.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Any

from botocore.exceptions import ClientError

from .._reader import ForwardStream
from ..errors import StorageError
from ._s3_errors import code, missing, status
from ._s3_streams import Body

__all__ = ["RangedBody", "open_object"]

#: Parts fetched ahead of the reader (each ``part`` bytes, held in memory).
AHEAD = 4
_TOTAL = re.compile(r"bytes \d+-\d+/(\d+)")


def open_object(storage: Any, key: str, part: int) -> Any:
    """The object as a binary stream: a :class:`Body` when one part holds
    it, else a :class:`RangedBody`; ``FileNotFoundError`` if missing."""
    with storage._errors("get_object s3://{}/{}", storage.bucket, key):
        try:
            response = storage._s3().get_object(Bucket=storage.bucket, Key=key,
                                                Range=f"bytes=0-{part - 1}")
        except ClientError as exc:
            if missing(exc):
                raise storage._not_found(key) from None
            if status(exc) != 416 and code(exc) != "InvalidRange":
                raise
            response = None  # an empty object has no byte 0
    if response is None:
        return _whole(storage, key)
    found = _TOTAL.fullmatch(str(response.get("ContentRange", "")))
    total = int(found.group(1)) if found else None
    if total is None or total <= part:
        return Body(storage, key, response)
    return RangedBody(storage, key, response, total, part)


def _whole(storage: Any, key: str) -> Body:
    response = storage._call("get_object", key, ("missing",))
    if response == "missing":
        raise storage._not_found(key)
    return Body(storage, key, response)


class RangedBody(ForwardStream):
    """An object of ``total`` bytes read part by part, later parts fetched
    in parallel while earlier ones are consumed.  ``seek`` only reports
    positions (the entry reader asks for the size)."""

    def __init__(self, storage: Any, key: str, first: dict[str, Any], total: int,
                 part: int) -> None:
        super().__init__()
        self._storage, self._key, self._total, self._part = storage, key, total, part
        self._size = total
        self._etag = str(first["ETag"])
        self._stream: Body | None = Body(storage, key, first)
        self._current = memoryview(b"")
        self._pending: collections.deque[Any] = collections.deque()
        self._next = int(first.get("ContentLength", part))
        self._schedule()

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        done = 0
        while done < len(target):
            if self._stream is not None:
                got = self._stream.readinto(target[done:])
                if got:
                    done += got
                    continue
                self._stream.close()
                self._stream = None
            if not self._current:
                if not self._pending:
                    break
                self._current = memoryview(self._pending.popleft().result())
                self._schedule()
                continue
            taken = min(len(target) - done, len(self._current))
            target[done : done + taken] = self._current[:taken]
            self._current = self._current[taken:]
            done += taken
        self._pos += done
        return done

    def close(self) -> None:
        if not self.closed:
            for future in self._pending:
                future.cancel()
            self._pending.clear()
            if self._stream is not None:
                self._stream.close()
        super().close()

    def _schedule(self) -> None:
        pool = _pool(self._storage)
        while len(self._pending) < AHEAD and self._next < self._total:
            end = min(self._next + self._part, self._total) - 1
            self._pending.append(pool.submit(self._fetch, self._next, end))
            self._next = end + 1

    def _fetch(self, start: int, end: int) -> bytes:
        storage, key = self._storage, self._key
        with storage._errors("get_object s3://{}/{}", storage.bucket, key):
            try:
                response = storage._s3().get_object(
                    Bucket=storage.bucket, Key=key, Range=f"bytes={start}-{end}",
                    IfMatch=self._etag)
            except ClientError as exc:
                if status(exc) != 412:
                    raise
                raise StorageError(f"S3 object s3://{storage.bucket}/{key} was replaced while "
                                   "it was being read; the next call reads the new one") from exc
        with Body(storage, key, response) as body:
            data = body.read()
        if len(data) != end - start + 1:
            raise StorageError(f"S3 sent {len(data)} bytes of s3://{storage.bucket}/{key} "
                               f"for a range of {end - start + 1}; the next call tries again")
        return data


def _pool(storage: Any) -> Any:
    """The storage's threads for ranged GETs (made again in a forked child)."""
    with storage._client_guard:
        pool = storage.__dict__.get("_range_pool")
        if pool is None or storage.__dict__.get("_range_pool_pid") != os.getpid():
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(AHEAD, thread_name_prefix="labcache-s3-range")
            storage._range_pool, storage._range_pool_pid = pool, os.getpid()
        return pool
