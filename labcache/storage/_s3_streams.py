"""The two file-like objects S3Storage streams through: one that feeds an
upload from an entry's buffers without joining them, and one over a
download whose network errors cross the storage's error boundary (they
become ``StorageError``); and the reading of the dates in S3's responses."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["Body", "ChunkReader", "http_date"]


class ChunkReader:
    """A forward-only file over buffers for ``upload_fileobj``: boto3 reads
    it part by part, and ``read(n)`` copies at most ``n`` bytes (one part)."""

    def __init__(self, chunks: Iterable[Any]) -> None:
        self._chunks, self._current = iter(chunks), memoryview(b"")

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        pieces, wanted = [], math.inf if size is None or size < 0 else size
        while wanted > 0:
            if not self._current:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._current = memoryview(chunk).cast("B")
            pieces.append(self._current[: int(min(wanted, len(self._current)))])
            self._current = self._current[len(pieces[-1]):]
            wanted -= len(pieces[-1])
        return b"".join(pieces)


class Body(io.RawIOBase):
    """An object's HTTP stream, network errors as ``StorageError``.  ``seek``
    only *reports* positions: the entry reader learns the size from
    ``seek(0, SEEK_END)`` and refuses a header claiming more bytes than exist."""

    def __init__(self, storage: Any, key: str, response: dict[str, Any]) -> None:
        super().__init__()
        self._storage, self._key, self._stream = storage, key, response["Body"]
        self._size, self._pos, self._probe = int(response.get("ContentLength", -1)), 0, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:  # not RawIOBase's: no 8 KiB steps
        return bytes(self._io("read", None if size is None or size < 0 else size))

    def readinto(self, buffer: Any) -> int:
        return int(self._io("readinto", buffer))

    def _io(self, method: str, argument: Any) -> Any:
        if self._probe != self._pos:
            raise io.UnsupportedOperation("an S3 object is read front to back only")
        with self._storage._errors("read s3://{}/{}", self._storage.bucket, self._key):
            result = getattr(self._stream, method)(argument)
        self._pos = self._probe = self._pos + (result if isinstance(result, int) else len(result))
        return result

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END and self._size < 0:
            raise io.UnsupportedOperation("size unknown")
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self._probe, io.SEEK_END: self._size}[whence]
        self._probe = start + offset
        return self._probe

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def http_date(text: str) -> float:
    """Unix seconds of an HTTP date ("-0000" parses without a zone: it is UTC).

    Examples:
        >>> http_date("Thu, 01 Jan 1970 00:01:00 GMT")
        60.0
    """
    when = parsedate_to_datetime(text)
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()
