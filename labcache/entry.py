"""The entry format: a small header, then a pickle and its out-of-band buffers.

Layout of one entry (all integers little-endian)::

    b"LCE1" | u32 header length | header (JSON) | 32-byte signature |
    pickle bytes | zero padding | buffer 0 | zero padding | buffer 1 | ...

The header holds the format version, the size of every part, an xxh3-128
checksum over the pickle and buffers, and metadata (function, arguments,
creation time, compute time, who made it).  Big buffers (numpy arrays,
bytes) travel out of band with pickle protocol 5 and start on 64-byte
boundaries, so a load reads them straight into their final memory with no
extra copy and no unpickling of their contents.

With ``LABCACHE_SECRET`` set, the signature is an HMAC-SHA256 over header
and payload; a reader with the secret refuses unsigned or altered entries
*before* unpickling anything, because unpickling runs code.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import mmap
import os
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import xxhash

from .errors import CorruptEntryError, SignatureError, UnpicklableResultError

__all__ = ["FORMAT_VERSION", "Encoded", "decode", "encode", "read_header", "upload_chunks"]

FORMAT_VERSION = 1
MAGIC = b"LCE1"
_PREFIX = struct.Struct("<4sI")
_SIG_SIZE = 32
_ALIGN = 64
_MAX_HEADER = 16 * 1024 * 1024
_NO_SIGNATURE = bytes(_SIG_SIZE)
_HUGE_BUFFER = 4 * 2**20


def secret() -> bytes | None:
    """The signing secret from ``LABCACHE_SECRET``, if any."""
    value = os.environ.get("LABCACHE_SECRET")
    return value.encode() if value else None


@dataclass
class Encoded:
    """An entry ready to write: a list of chunks, never joined in memory.

    Storages write ``iter_chunks()`` one after the other; a storage that only
    knows file objects can call ``read()``.
    """

    chunks: list[Any]
    header: dict[str, Any]
    size: int = 0
    _stream: io.BytesIO | None = field(default=None, repr=False)

    def iter_chunks(self) -> Iterator[memoryview]:
        """The entry's bytes, in order, as zero-copy views."""
        for chunk in self.chunks:
            yield memoryview(chunk).cast("B")

    def read(self, size: int = -1) -> bytes:
        """File-like access for storages written against the seed's docs."""
        if self._stream is None:
            self._stream = io.BytesIO(bytes(self))
        return self._stream.read(size)

    def __bytes__(self) -> bytes:
        return b"".join(self.iter_chunks())

    def __reduce__(self) -> tuple[Any, ...]:
        # A storage that pickles what it is given stores plain bytes.
        return (bytes, (bytes(self),))


def encode(value: object, meta: dict[str, Any]) -> Encoded:
    """Serialize ``value`` into an entry; raises ``UnpicklableResultError``.

    Examples:
        >>> entry = encode([1, 2, 3], {"function": "demo"})
        >>> decode(bytes(entry))[0]
        [1, 2, 3]
    """
    pickled, buffers = _pickle(value)
    sizes = [len(pickled)] + [view.nbytes for view in buffers]
    checksum = xxhash.xxh3_128()
    checksum.update(pickled)
    for view in buffers:
        checksum.update(view)
    key = secret()
    header = {
        "format": FORMAT_VERSION,
        "sizes": sizes,
        "align": _ALIGN,
        "checksum": checksum.hexdigest(),
        "signed": key is not None,
        "meta": meta,
    }
    head = json.dumps(header, separators=(",", ":"), sort_keys=True, default=str).encode()
    prefix = _PREFIX.pack(MAGIC, len(head)) + head
    payload = _layout(len(prefix) + _SIG_SIZE, pickled, buffers)
    signature = _sign(key, prefix, [pickled, *buffers]) if key else _NO_SIGNATURE
    chunks = [prefix, signature, *payload]
    return Encoded(chunks, header, sum(memoryview(c).nbytes for c in chunks))


def decode(source: Any, verify_key: bytes | bool | None = True) -> tuple[Any, dict[str, Any]]:
    """Read an entry back: ``(value, header)``.

    ``source`` is bytes or a binary file object.  Raises
    ``CorruptEntryError`` (or its ``SignatureError``) for anything that is
    not a whole, intact, correctly signed entry; nothing is unpickled before
    the checks pass.
    """
    key = secret() if verify_key is True else (verify_key or None)
    reader = _Reader(source)
    prefix, header = _read_prefix_and_header(reader)
    signature = reader.read_exact(_SIG_SIZE)
    parts = _read_parts(reader, len(prefix) + _SIG_SIZE, header)
    checksum = xxhash.xxh3_128()
    for part in parts:
        checksum.update(part)
    if checksum.hexdigest() != header["checksum"]:
        raise CorruptEntryError("checksum mismatch: the entry was altered or damaged")
    if key is not None:
        if not header.get("signed") or signature == _NO_SIGNATURE:
            raise SignatureError("entry is not signed but LABCACHE_SECRET is set")
        if not hmac.compare_digest(signature, _sign(key, prefix, parts)):
            raise SignatureError("entry signature does not match LABCACHE_SECRET")
    try:
        value = pickle.loads(parts[0], buffers=parts[1:])
    except Exception as exc:
        raise CorruptEntryError(f"cannot unpickle the entry ({type(exc).__name__}: {exc})") from exc
    return value, header


def read_header(source: Any) -> dict[str, Any]:
    """Only the header of an entry (cheap: for listings).

    Examples:
        >>> read_header(bytes(encode(None, {"function": "f"})))["meta"]
        {'function': 'f'}
    """
    return _read_prefix_and_header(_Reader(source))[1]


# -- helpers -----------------------------------------------------------------


def upload_chunks(file: object, read_size: int = 16 * 2**20) -> Iterator[memoryview]:
    """What a storage's ``upload_file`` was given, as byte views in order.

    Accepts an :class:`Encoded` entry (its chunks, never joined), bytes-like
    objects, or a binary file (read ``read_size`` bytes at a time).

    Examples:
        >>> [bytes(v) for v in upload_chunks(b"abc")]
        [b'abc']
    """
    if hasattr(file, "iter_chunks"):
        chunks: Any = file.iter_chunks()
    elif isinstance(file, (bytes, bytearray, memoryview)):
        chunks = [file]
    elif hasattr(file, "read"):
        chunks = iter(lambda: file.read(read_size), b"")
    else:
        raise TypeError(
            f"upload_file needs bytes or a binary file object, not {type(file).__name__}")
    for chunk in chunks:
        yield memoryview(chunk).cast("B")


def _pickle(value: object) -> tuple[bytes, list[memoryview]]:
    import cloudpickle  # imported on the first store, not with labcache

    buffers: list[pickle.PickleBuffer] = []
    try:
        pickled = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        return pickled, [buffer.raw() for buffer in buffers]
    except BufferError:  # a non-contiguous buffer: keep it in band
        return cloudpickle.dumps(value, protocol=5), []
    except Exception as exc:
        raise UnpicklableResultError(
            f"the result ({type(value).__qualname__}) cannot be pickled: "
            f"{type(exc).__name__}: {exc}. Return plain data (arrays, frames, "
            "dicts) or make the object picklable; nothing was stored"
        ) from exc


def _padding(offset: int) -> int:
    return -offset % _ALIGN


def _layout(offset: int, pickled: bytes, buffers: list[memoryview]) -> list[Any]:
    chunks: list[Any] = [pickled]
    offset += len(pickled)
    for view in buffers:
        pad = _padding(offset)
        if pad:
            chunks.append(bytes(pad))
        chunks.append(view)
        offset += pad + view.nbytes
    return chunks


def _sign(key: bytes, prefix: bytes, parts: list[Any]) -> bytes:
    mac = hmac.new(key, prefix, hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.digest()


def _read_prefix_and_header(reader: _Reader) -> tuple[bytes, dict[str, Any]]:
    raw = reader.read_exact(_PREFIX.size)
    magic, length = _PREFIX.unpack(raw)
    if magic != MAGIC:
        raise CorruptEntryError("not a labcache entry (bad magic bytes)")
    if length > _MAX_HEADER:
        raise CorruptEntryError(f"header length {length} is implausible")
    head = reader.read_exact(length)
    try:
        header = json.loads(head)
    except (ValueError, RecursionError) as exc:
        raise CorruptEntryError(f"unreadable header ({exc})") from None
    _check_header(header)
    return raw + head, header


def _check_header(header: Any) -> None:
    if not isinstance(header, dict):
        raise CorruptEntryError("header is not a JSON object")
    if header.get("format") != FORMAT_VERSION:
        raise CorruptEntryError(
            f"entry format {header.get('format')!r} is not {FORMAT_VERSION}; "
            "it was written by another labcache version"
        )
    sizes = header.get("sizes")
    valid = isinstance(sizes, list) and all(isinstance(s, int) and s >= 0 for s in sizes)
    if not (valid and sizes):
        raise CorruptEntryError("header has no valid part sizes")
    if not isinstance(header.get("checksum"), str):
        raise CorruptEntryError("header has no checksum")


def _read_parts(reader: _Reader, offset: int, header: dict[str, Any]) -> list[Any]:
    sizes = header["sizes"]
    parts = [reader.read_exact(sizes[0])]
    offset += sizes[0]
    for size in sizes[1:]:
        pad = _padding(offset)
        if reader.read_exact(pad) != bytes(pad):
            raise CorruptEntryError("damaged padding between parts")
        parts.append(reader.read_into_new(size))
        offset += pad + size
    if reader.has_more():
        raise CorruptEntryError("trailing bytes after the last part")
    return parts


class _Reader:
    """Reads exact sizes from bytes or a file, failing clearly on truncation."""

    def __init__(self, source: Any) -> None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._view: memoryview | None = memoryview(source).cast("B")
            self._file = None
            self._size: int | None = len(self._view)
        else:
            self._view, self._file = None, source
            self._size = _file_size(source)
        self._pos = 0

    def _check_available(self, size: int) -> None:
        # The header's sizes are not trusted before the checksum: never
        # allocate more than the source can hold.
        if self._size is not None and size > self._size - self._pos:
            raise CorruptEntryError(
                f"truncated entry: needs {size} more bytes, has {self._size - self._pos}")

    def read_exact(self, size: int) -> bytes:
        self._check_available(size)
        if self._view is not None:
            chunk = self._view[self._pos : self._pos + size].tobytes()
        else:
            chunk = self._file.read(size) if size else b""  # type: ignore[union-attr]
        self._check(len(chunk), size)
        return chunk

    def read_into_new(self, size: int) -> Any:
        """A fresh writable buffer filled from the source (numpy arrays
        rebuilt on it stay writable, as they were when stored)."""
        self._check_available(size)
        target = _allocate(size)
        if self._view is not None:
            got = len(self._view[self._pos : self._pos + size])
            target[:got] = self._view[self._pos : self._pos + got]
        else:
            got = _readinto_fully(self._file, memoryview(target))
        self._check(got, size)
        return target

    def has_more(self) -> bool:
        if self._view is not None:
            return self._pos < len(self._view)
        return bool(self._file.read(1))  # type: ignore[union-attr]

    def _check(self, got: int, wanted: int) -> None:
        self._pos += got
        if got != wanted:
            raise CorruptEntryError(f"truncated entry: expected {wanted} more bytes, got {got}")


def _file_size(file: Any) -> int | None:
    try:
        return int(os.fstat(file.fileno()).st_size - file.tell())
    except (AttributeError, OSError, ValueError):
        pass
    try:  # a seekable stream such as BytesIO
        here = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(here)
        return int(end - here)
    except (AttributeError, OSError, ValueError):
        return None


def _allocate(size: int) -> Any:
    """A writable zeroed buffer; big ones come from private anonymous memory
    backed by huge pages, which fills ~4x faster than a ``bytearray`` (whose
    memset and 4 KiB page faults dominate a 200 MB load)."""
    if size < _HUGE_BUFFER or not hasattr(mmap, "MAP_PRIVATE"):
        return bytearray(size)
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        memory.madvise(mmap.MADV_HUGEPAGE)
    return memory


def _readinto_fully(file: Any, target: memoryview) -> int:
    if not hasattr(file, "readinto"):
        data = file.read(len(target))
        target[: len(data)] = data
        return len(data)
    done = 0
    while done < len(target):
        got = file.readinto(target[done:])
        if not got:
            break
        done += got
    return done
