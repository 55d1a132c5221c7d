"""Compression of entries on the wire to a network storage (Redis, S3).

A compressed entry travels as a *frame*::

    b"\\x89LCZ" | u32 version | u64 size of the entry | block, block, ...
    block:  u8 codec (0 raw, 1 zstd) | 3 zero bytes | u32 entry bytes | u32 stored bytes | data

The entry is cut into blocks of 4 MiB.  Before a block is compressed, a
64 KiB sample of it is: a block whose sample does not shrink by at least
1/8 (random floats, already compressed data) goes as it is, so an
incompressible array costs one small trial per block, not a failed
compression of the whole entry.  The first block is always the entry's
first 64 KiB, raw, so a ranged read of the first bytes still finds the
entry's header (listings, version checks).

Readers accept both: a stored value that does not start with the frame's
magic bytes is the entry itself (entries start with ``LCE3``).

zstandard at level 1, measured on this project's CI machine against lz4
(see docs/storages.md): on a pickled DataFrame of repeated strings and
categories it shrank the bytes 13x against lz4's 4.5x at about the same
speed; on random float64 neither saves anything worth the time.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import Any

from ._reader import ForwardStream
from .entry import upload_chunks
from .errors import StorageError

__all__ = ["MAGIC", "COMPRESS_CHOICES", "check_compress", "frame_chunks", "open_frame",
           "unframe_head"]

MAGIC = b"\x89LCZ"
_FRAME = struct.Struct("<4sIQ")
_BLOCK = struct.Struct("<BxxxII")
_RAW, _ZSTD = 0, 1
#: The first block: the entry's first bytes, never compressed (headers stay readable).
HEAD_BLOCK = 64 * 1024
BLOCK = 4 * 2**20
_SAMPLE = 64 * 1024
#: A block is sent compressed only if it shrinks to at most this fraction.
_WORTH = 0.875
#: Entries smaller than this go as they are: a round trip costs more than the bytes.
MIN_SIZE = 256 * 1024
#: How many bytes a ranged read needs to see an entry's first 64 KiB in a frame.
HEAD_SPAN = _FRAME.size + _BLOCK.size + HEAD_BLOCK
COMPRESS_CHOICES = (True, False, "auto")


def check_compress(value: object) -> bool | str:
    """``compress=`` as given or from a URL (``1``/``0``/``auto``), checked.

    Examples:
        >>> check_compress("auto"), check_compress("0"), check_compress(True)
        ('auto', False, True)
    """
    if isinstance(value, str):
        flags: dict[str, bool | str] = {"1": True, "true": True, "yes": True, "0": False,
                                        "false": False, "no": False, "auto": "auto"}
        if value.lower() in flags:
            return flags[value.lower()]
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError(f"compress must be True, False or 'auto', not {value!r}")


def available() -> bool:
    """Whether the codec (``zstandard``, in the redis and s3 extras) is installed."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def frame_chunks(file: object, compress: bool | str,
                 read_size: int = 16 * 2**20) -> Iterator[memoryview]:
    """What to send for ``file`` (an encoded entry, bytes or a file): a frame
    when compressing may pay, else the bytes as they are.

    ``"auto"`` compresses labcache's own entries of at least 256 KiB when
    ``zstandard`` is installed (plain bytes given by other code go as they
    are); ``True`` compresses any bytes of that size and requires
    ``zstandard``; ``False`` never compresses.

    Examples:
        >>> import io
        >>> data = b"abc" * 700_000
        >>> framed = b"".join(frame_chunks(data, True))
        >>> len(framed) < len(data) // 10, bytes(open_frame(io.BytesIO(framed)).read()) == data
        (True, True)
    """
    size = _known_size(file)
    if compress is False or size is None or size < MIN_SIZE:
        return upload_chunks(file, read_size)  # a file object: read_size at a time
    if compress == "auto" and (not hasattr(file, "iter_chunks") or not available()):
        return upload_chunks(file, read_size)
    return _frame(upload_chunks(file), size)


def _known_size(file: object) -> int | None:
    if hasattr(file, "iter_chunks"):
        return int(getattr(file, "size", 0)) or None
    if isinstance(file, (bytes, bytearray, memoryview)):
        return memoryview(file).nbytes
    return None  # a file object: its size is unknown, send it as it is


def _frame(chunks: Iterator[memoryview], size: int) -> Iterator[memoryview]:
    import zstandard

    compressor = zstandard.ZstdCompressor(level=1)
    yield memoryview(_FRAME.pack(MAGIC, 1, size))
    for index, block in enumerate(_blocks(chunks)):
        if index == 0 or not _shrinks(compressor, block):
            yield memoryview(_BLOCK.pack(_RAW, len(block), len(block)))
            yield block
            continue
        packed = compressor.compress(block)
        if len(packed) > _WORTH * len(block):  # the sample lied: keep the raw block
            yield memoryview(_BLOCK.pack(_RAW, len(block), len(block)))
            yield block
        else:
            yield memoryview(_BLOCK.pack(_ZSTD, len(block), len(packed)))
            yield memoryview(packed)


def _shrinks(compressor: Any, block: memoryview) -> bool:
    """Whether a sample from the middle of the block compresses well."""
    start = max(len(block) // 2 - _SAMPLE // 2, 0)
    sample = block[start : start + _SAMPLE]
    return len(compressor.compress(sample)) <= _WORTH * len(sample)


def _blocks(chunks: Iterator[memoryview]) -> Iterator[memoryview]:
    """The entry in blocks: the first ``HEAD_BLOCK`` bytes, then ``BLOCK``s.
    Small chunks are joined; big ones are cut (views, no copy)."""
    pending: list[memoryview] = []
    filled, limit = 0, HEAD_BLOCK
    for chunk in chunks:
        while len(chunk):
            taken = chunk[: limit - filled]
            chunk = chunk[len(taken):]
            pending.append(taken)
            filled += len(taken)
            if filled == limit:
                yield _joined(pending)
                pending, filled, limit = [], 0, BLOCK
    if pending:
        yield _joined(pending)


def _joined(pieces: list[memoryview]) -> memoryview:
    return pieces[0] if len(pieces) == 1 else memoryview(b"".join(pieces))


def unframe_head(data: bytes) -> bytes:
    """The entry's first bytes from the first bytes of a stored value.

    Examples:
        >>> unframe_head(b"LCE3...")
        b'LCE3...'
    """
    if not data.startswith(MAGIC):
        return data
    body = data[_FRAME.size:]
    if len(body) < _BLOCK.size:
        return b""
    codec, length, stored = _BLOCK.unpack_from(body)
    return body[_BLOCK.size : _BLOCK.size + min(length, stored)] if codec == _RAW else b""


def open_frame(stream: Any) -> Any:
    """A readable binary file giving the entry, whether ``stream`` holds a
    frame or the entry as it is.  Closing it closes ``stream``."""
    first = _read_fully(stream, _FRAME.size)
    if len(first) == _FRAME.size and first.startswith(MAGIC):
        _, version, size = _FRAME.unpack(first)
        if version != 1:
            raise StorageError(f"a stored entry is compressed in frame version {version}, "
                               "which this labcache cannot read; upgrade labcache")
        return Unframed(stream, size)
    return _Rewound(stream, first)


def _read_fully(stream: Any, size: int) -> bytes:
    pieces, wanted = [], size
    while wanted:
        piece = stream.read(wanted)
        if not piece:
            break
        pieces.append(piece)
        wanted -= len(piece)
    return b"".join(pieces)


class _Rewound(ForwardStream):
    """``stream`` with the bytes already read from it put back in front."""

    def __init__(self, stream: Any, first: bytes) -> None:
        super().__init__()
        self._stream, self._first = stream, memoryview(first)
        self._size = _remaining(stream)
        if self._size is not None:
            self._size += len(first)

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        taken = min(len(target), len(self._first))
        if taken:
            target[:taken] = self._first[:taken]
            self._first = self._first[taken:]
        if taken < len(target):  # as much as the stream itself would give
            taken += self._stream.readinto(target[taken:]) or 0
        self._pos += taken
        return taken

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            rest: bytes = self._stream.read()
            head, self._first = bytes(self._first), memoryview(b"")
            self._pos += len(head) + len(rest)
            return head + rest
        return super().read(size) or b""

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def _remaining(stream: Any) -> int | None:
    try:
        here = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(here)
        return int(end - here)
    except (AttributeError, OSError, ValueError):
        return None


class Unframed(ForwardStream):
    """The entry inside a frame, block by block: raw blocks are read straight
    into the caller's buffer, compressed ones decompressed first."""

    def __init__(self, stream: Any, size: int) -> None:
        super().__init__()
        self._stream, self._size = stream, size
        self._current, self._raw_left = memoryview(b""), 0
        self._decompressor: Any = None

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        done = 0
        while done < len(target):
            if self._current:
                taken = min(len(target) - done, len(self._current))
                target[done : done + taken] = self._current[:taken]
                self._current = self._current[taken:]
            elif self._raw_left:
                want = min(len(target) - done, self._raw_left)
                taken = self._stream.readinto(target[done : done + want]) or 0
                if not taken:
                    break
                self._raw_left -= taken
            elif not self._next_block():
                break
            else:
                continue
            done += taken
        self._pos += done
        return done

    def _next_block(self) -> bool:
        head = _read_fully(self._stream, _BLOCK.size)
        if len(head) < _BLOCK.size:
            return False  # the end (or a truncation, which the entry reader reports)
        codec, length, stored = _BLOCK.unpack(head)
        if codec == _RAW:
            self._raw_left = length
            return True
        if codec != _ZSTD:
            return False  # an unknown block: the entry reads as truncated, a miss
        packed = _read_fully(self._stream, stored)
        if self._decompressor is None:
            try:
                import zstandard
            except ImportError:
                raise StorageError("a stored entry is compressed with zstandard, which is "
                                   "not installed; pip install 'labcache[redis]' or "
                                   "'labcache[s3]'") from None
            self._decompressor = zstandard.ZstdDecompressor()
        try:
            self._current = memoryview(self._decompressor.decompress(
                packed, max_output_size=length))
        except Exception:  # a damaged block: stop here, the reader sees a truncation
            return False
        return bool(len(self._current) == length)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()
