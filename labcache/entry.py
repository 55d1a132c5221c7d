"""The entry format: a small binary header, then a pickle and its out-of-band buffers.

Layout of one entry (all integers little-endian)::

    prefix (64 bytes): b"LCE2" | u16 format | u16 flags | u32 parts |
                       u32 header length | 16-byte checksum | 32-byte signature
    header:            f64 created | f64 compute seconds | u16 key length |
                       key | u64 size of every part | metadata (JSON)
    payload:           pickle bytes | zero padding | buffer 0 | padding | buffer 1 ...

The checksum is xxh3-128 over everything after the prefix (header, pickle,
padding and buffers), so a damaged byte anywhere is caught.  The fields a
cache hit needs (key, created, compute seconds, sizes) sit at fixed places:
a hit never parses the JSON metadata, which is only for listings.

Big buffers (numpy arrays, bytes) travel out of band with pickle protocol 5
and start on 64-byte boundaries, so a load reads them straight into their
final memory (or maps them, with ``copy_buffers=False``) and never
unpickles their contents.

With ``LABCACHE_SECRET`` set, the signature is an HMAC-SHA256 over the
prefix's first 32 bytes and everything after the prefix; a reader with the
secret refuses unsigned or altered entries *before* unpickling anything,
because unpickling runs code.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import xxhash

from ._reader import Reader, allocate
from .errors import CorruptEntryError, SignatureError, UnpicklableResultError

__all__ = ["FORMAT_VERSION", "Encoded", "Header", "decode", "encode", "load", "read_header",
           "upload_chunks"]

FORMAT_VERSION = 2
MAGIC = b"LCE2"
_OLD_MAGIC = b"LCE1"
_PREFIX = struct.Struct("<4sHHII16s32s")
_FIXED = struct.Struct("<ddH")
_SIZE = struct.Struct("<Q")
_SIGNED = 1
_SIGNED_SPAN = 32  # the prefix bytes the signature covers: all but itself
_ALIGN = 64
_MAX_HEADER = 16 * 1024 * 1024
_MAX_PARTS = 1 << 20
_NO_SIGNATURE = bytes(32)


def secret() -> bytes | None:
    """The signing secret from ``LABCACHE_SECRET``, if any."""
    try:  # the environment's own mapping: a fifth of os.environ.get's cost, on every hit
        raw = _ENVIRON_DATA.get(_SECRET_NAME)
        value = os.environ.decodevalue(raw) if raw else None
    except AttributeError:  # an os.environ without the CPython internals
        value = os.environ.get("LABCACHE_SECRET")
    return value.encode() if value else None


_ENVIRON_DATA: Any = getattr(os.environ, "_data", None)
_SECRET_NAME: Any = getattr(os.environ, "encodekey", str)("LABCACHE_SECRET")


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


class Header(NamedTuple):
    """What an entry says about itself; ``meta`` is parsed only when asked for.

    Examples:
        >>> value, header = load(bytes(encode(7, {"key": "k1", "created": 5.0})))
        >>> value, header.key, header.created, header.meta["key"]
        (7, 'k1', 5.0, 'k1')
    """

    format: int
    signed: bool
    sizes: tuple[int, ...]
    checksum: bytes
    key: str | None
    created: float
    compute_seconds: float | None
    meta_json: bytes

    @property
    def meta(self) -> dict[str, Any]:
        """The metadata written with the entry (function, arguments, who, when)."""
        try:
            meta = json.loads(self.meta_json) if self.meta_json else {}
        except (ValueError, RecursionError) as exc:
            raise CorruptEntryError(f"unreadable metadata ({exc})") from None
        if not isinstance(meta, dict):
            raise CorruptEntryError("metadata is not a JSON object")
        return meta

    def as_dict(self) -> dict[str, Any]:
        """The header as plain data (what :func:`read_header` returns)."""
        return {"format": self.format, "sizes": list(self.sizes), "align": _ALIGN,
                "checksum": self.checksum.hex(), "signed": self.signed, "meta": self.meta}


def encode(value: object, meta: dict[str, Any]) -> Encoded:
    """Serialize ``value`` into an entry; raises ``UnpicklableResultError``.

    ``meta`` may carry ``key``, ``created`` and ``compute_seconds``: those go
    to fixed places in the header, where a hit reads them without parsing JSON.

    Examples:
        >>> entry = encode([1, 2, 3], {"function": "demo"})
        >>> decode(bytes(entry))[0]
        [1, 2, 3]
    """
    pickled, buffers = _pickle(value)
    sizes = [len(pickled)] + [view.nbytes for view in buffers]
    head = _header_bytes(meta, sizes)
    payload = _layout(_PREFIX.size + len(head), pickled, buffers)
    checksum = xxhash.xxh3_128(head)
    for part in payload:
        checksum.update(part)
    key = secret()
    flags = _SIGNED if key else 0
    start = _PREFIX.pack(MAGIC, FORMAT_VERSION, flags, len(sizes), len(head),
                         checksum.digest(), _NO_SIGNATURE)[:_SIGNED_SPAN]
    signature = _sign(key, start, [head, *payload]) if key else _NO_SIGNATURE
    chunks = [start + signature, head, *payload]
    header = {"format": FORMAT_VERSION, "sizes": sizes, "align": _ALIGN,
              "checksum": checksum.hexdigest(), "signed": key is not None, "meta": meta}
    return Encoded(chunks, header, sum(memoryview(c).nbytes for c in chunks))


def load(source: Any, verify_key: bytes | bool | None = True,
         copy_buffers: bool = True) -> tuple[Any, Header]:
    """Read an entry back: ``(value, Header)``; the fast path of a cache hit.

    ``source`` is bytes, a memory map or a binary file object.  With
    ``copy_buffers=False`` and an in-memory source, big buffers (array data)
    are views of the source itself: a memory-mapped file gives arrays backed
    by the file.  Raises ``CorruptEntryError`` (or its ``SignatureError``)
    for anything that is not a whole, intact, correctly signed entry;
    nothing is unpickled before the checks pass.
    """
    key = secret() if verify_key is True else (verify_key or None)
    if key is None and type(source) is bytes:
        found = _load_small(source)
        if found is not None:
            return found
    if type(source) is bytes:  # a small entry read whole: the usual hit
        start, header, covered, parts = _split_bytes(source, copy_buffers)
        digest = xxhash.xxh3_128_digest(covered[0])
    else:
        reader = Reader(source)
        start, head, header = _read_header(reader, parse_meta=False)
        covered, parts, digest = _read_payload(reader, head, header, copy_buffers)
    if digest != header.checksum:
        raise CorruptEntryError("checksum mismatch: the entry was altered or damaged")
    if key is not None:
        signature = start[_SIGNED_SPAN:]
        if not header.signed or signature == _NO_SIGNATURE:
            raise SignatureError("entry is not signed but LABCACHE_SECRET is set")
        import hmac

        if not hmac.compare_digest(signature, _sign(key, start[:_SIGNED_SPAN], covered)):
            raise SignatureError("entry signature does not match LABCACHE_SECRET")
    try:
        value = pickle.loads(parts[0], buffers=parts[1:])
    except Exception as exc:
        raise CorruptEntryError(f"cannot unpickle the entry ({type(exc).__name__}: {exc})") from exc
    return value, header


def decode(source: Any, verify_key: bytes | bool | None = True) -> tuple[Any, dict[str, Any]]:
    """Read an entry back: ``(value, header as a dict)``.

    Examples:
        >>> decode(bytes(encode({"a": 1}, {"function": "f"})))[1]["meta"]
        {'function': 'f'}
    """
    value, header = load(source, verify_key)
    return value, header.as_dict()


def read_header(source: Any) -> dict[str, Any]:
    """Only the header of an entry (cheap: for listings); nothing is unpickled.

    Examples:
        >>> read_header(bytes(encode(None, {"function": "f"})))["meta"]
        {'function': 'f'}
    """
    return _read_header(Reader(source), parse_meta=True)[2].as_dict()


# -- writing -----------------------------------------------------------------


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


def _header_bytes(meta: dict[str, Any], sizes: list[int]) -> bytes:
    key = meta.get("key")
    key_bytes = key.encode() if isinstance(key, str) else b""
    created = meta.get("created")
    compute = meta.get("compute_seconds")
    fixed = _FIXED.pack(float(created) if isinstance(created, (int, float)) else 0.0,
                        float(compute) if isinstance(compute, (int, float)) else float("nan"),
                        len(key_bytes))
    sizes_bytes = b"".join(_SIZE.pack(size) for size in sizes)
    text = json.dumps(meta, separators=(",", ":"), sort_keys=True, default=str).encode()
    return fixed + key_bytes + sizes_bytes + text


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


def _sign(key: bytes, start: bytes, covered: list[Any]) -> bytes:
    import hashlib  # only teams with a secret pay for importing OpenSSL's hashes
    import hmac

    mac = hmac.new(key, start, hashlib.sha256)
    for part in covered:
        mac.update(part)
    return mac.digest()


# -- reading -----------------------------------------------------------------


def _read_header(reader: Reader, parse_meta: bool) -> tuple[bytes, bytes, Header]:
    """(the prefix, the header bytes, the parsed header); checks only its shape."""
    start = reader.read_exact(_PREFIX.size)
    version, flags, count, length, checksum = _check_prefix(start)
    head = reader.read_exact(length)
    header = _parse_header(head, version, flags, count, checksum)
    if parse_meta:
        header.meta  # noqa: B018  (raises CorruptEntryError for bad JSON)
    return start, head, header


def _load_small(data: bytes) -> tuple[Any, Header] | None:
    """The usual hit, an unsigned one-part entry read whole, decoded with as
    little Python as possible; None for anything else, which the general path
    then decodes (or explains what is wrong with it)."""
    fixed_at = _PREFIX.size
    if len(data) < fixed_at + _FIXED.size:
        return None
    magic, version, flags, count, length, checksum, _ = _PREFIX.unpack_from(data)
    if magic != MAGIC or version != FORMAT_VERSION or count != 1 or flags:
        return None
    created, compute, key_length = _FIXED.unpack_from(data, fixed_at)
    sizes_at = fixed_at + _FIXED.size + key_length
    end = fixed_at + length
    if sizes_at + _SIZE.size > end or end > len(data):
        return None
    (size,) = _SIZE.unpack_from(data, sizes_at)
    view = memoryview(data)
    if end + size != len(data) or xxhash.xxh3_128_digest(view[fixed_at:]) != checksum:
        return None
    try:
        key = data[fixed_at + _FIXED.size : sizes_at].decode() if key_length else None
    except UnicodeDecodeError:
        return None
    try:
        value = pickle.loads(view[end:])
    except Exception as exc:
        raise CorruptEntryError(f"cannot unpickle the entry ({type(exc).__name__}: {exc})") from exc
    return value, Header(FORMAT_VERSION, False, (size,), checksum, key, created,
                         None if compute != compute else compute,
                         data[sizes_at + _SIZE.size : end])


def _split_bytes(data: bytes, copy_buffers: bool) -> tuple[bytes, Header, list[Any], list[Any]]:
    """What :func:`_read_header` and :func:`_read_payload` give, for bytes."""
    if len(data) < _PREFIX.size:
        raise CorruptEntryError(f"truncated entry: {len(data)} bytes")
    start = data[: _PREFIX.size]
    version, flags, count, length, checksum = _check_prefix(start)
    end = _PREFIX.size + length
    if len(data) < end:
        raise CorruptEntryError(f"truncated entry: needs {end} bytes, has {len(data)}")
    header = _parse_header(data[_PREFIX.size : end], version, flags, count, checksum)
    covered, parts = _slice_payload(memoryview(data), end, header, copy_buffers)
    return start, header, covered, parts


def _check_prefix(start: bytes) -> tuple[int, int, int, int, bytes]:
    magic, version, flags, count, length, checksum, _ = _PREFIX.unpack(start)
    if magic != MAGIC:
        if magic == _OLD_MAGIC:
            raise CorruptEntryError("entry format 1 was written by an older labcache version")
        raise CorruptEntryError("not a labcache entry (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise CorruptEntryError(f"entry format {version} is not {FORMAT_VERSION}; "
                                "it was written by another labcache version")
    if not 0 < count <= _MAX_PARTS or length > _MAX_HEADER:
        raise CorruptEntryError(f"implausible header ({count} parts, {length} bytes)")
    return version, flags, count, length, checksum


def _parse_header(head: bytes, version: int, flags: int, count: int, checksum: bytes) -> Header:
    sizes_at = _FIXED.size
    if len(head) < sizes_at:
        raise CorruptEntryError("header too short")
    created, compute, key_length = _FIXED.unpack_from(head)
    sizes_at += key_length
    meta_at = sizes_at + _SIZE.size * count
    if len(head) < meta_at:
        raise CorruptEntryError("header too short for its part sizes")
    try:
        key = head[_FIXED.size:sizes_at].decode() if key_length else None
    except UnicodeDecodeError:
        raise CorruptEntryError("header key is not text") from None
    sizes = (_SIZE.unpack_from(head, sizes_at) if count == 1  # the usual small entry
             else struct.unpack_from(f"<{count}Q", head, sizes_at))
    return Header(version, bool(flags & _SIGNED), sizes, checksum, key, created,
                  None if compute != compute else compute, head[meta_at:])


def _read_payload(reader: Reader, head: bytes, header: Header,
                  copy_buffers: bool) -> tuple[list[Any], list[Any], bytes]:
    """(the pieces the checksum covers, in file order; [pickle, buffer, ...];
    their checksum, computed as they are read)."""
    if reader.view is not None:
        return _verify_mapped(reader.view, reader.position, head, header, copy_buffers)
    checksum = xxhash.xxh3_128(head)
    covered: list[Any] = [head]
    parts = [reader.read_exact(header.sizes[0])]
    checksum.update(parts[0])
    covered.append(parts[0])
    for size in header.sizes[1:]:
        covered.append(reader.read_exact(_padding(reader.position)))
        checksum.update(covered[-1])
        parts.append(reader.read_into_new(size, checksum.update))
        covered.append(parts[-1])
    if reader.has_more():
        raise CorruptEntryError("trailing bytes after the last part")
    return covered, parts, checksum.digest()


def _verify_mapped(view: memoryview, offset: int, head: bytes, header: Header,
                   copy_buffers: bool) -> tuple[list[Any], list[Any], bytes]:
    """:func:`_read_payload` for a source in memory that someone else may
    change while we read it (a memory-mapped file).

    The pickle stream is copied to private memory *first*; the checksum and
    signature are then computed over that copy (and the header already
    copied), and the very same copy is unpickled.  Whoever can write the
    file can swap bytes at any moment, but never between the check of the
    code that unpickling runs and its use.  Out-of-band buffers (array data)
    stay views of the mapping when ``copy_buffers`` is False: a writer of the
    file can still change those numbers after the check, never run code.
    """
    _, parts = _slice_payload(view, offset, header, copy_buffers)
    parts[0] = parts[0].tobytes()
    covered: list[Any] = [head, parts[0]]
    position = offset + len(parts[0])
    for part in parts[1:]:  # what is hashed is what is returned, copy or view
        pad = _padding(position)
        covered += [view[position : position + pad], part]
        position += pad + len(part)
    checksum = xxhash.xxh3_128()
    for piece in covered:
        checksum.update(piece)
    return covered, parts, checksum.digest()


def _slice_payload(view: memoryview, offset: int, header: Header,
                   copy_buffers: bool) -> tuple[list[Any], list[Any]]:
    """Parts of an in-memory entry as views (the payload starts at
    ``offset``): one checksum pass over everything after the prefix, and
    buffers copied (or not) straight from the source."""
    first, spans = offset, []
    for index, size in enumerate(header.sizes):
        if index:
            offset += _padding(offset)
        spans.append((offset, size))
        offset += size
    if offset > len(view):
        raise CorruptEntryError(
            f"truncated entry: needs {offset - first} more bytes, has {len(view) - first}")
    if offset < len(view):
        raise CorruptEntryError("trailing bytes after the last part")
    parts: list[Any] = [view[start : start + size] for start, size in spans]
    if copy_buffers:
        for index in range(1, len(parts)):
            copy = allocate(len(parts[index]))
            copy[:] = parts[index]
            parts[index] = copy
    return [view[_PREFIX.size:]], parts
