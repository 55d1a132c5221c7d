"""The entry format: a small binary header, then a pickle and its out-of-band buffers.

Layout of one entry (format 3; all integers little-endian)::

    prefix (64 bytes): b"LCE3" | u16 format | u16 flags | u32 parts |
                       u32 header length | 16-byte checksum | u32 seal length |
                       28 reserved zero bytes
    seal:              who signed and the signatures (none when unsigned;
                       see ``labcache._seal``)
    header:            f64 created | f64 compute seconds | u16 key length |
                       key | u64 size of every part | metadata (JSON)
    payload:           pickle bytes | zero padding | buffer 0 | padding | buffer 1 ...

The checksum is xxh3-128 over everything after the seal (header, pickle,
padding and buffers), so a damaged byte anywhere is caught.  The fields a
cache hit needs (key, created, compute seconds, sizes) sit at fixed places:
a hit never parses the JSON metadata, which is only for listings.

Big buffers (numpy arrays, bytes) travel out of band with pickle protocol 5
and start on 64-byte boundaries, so a load reads them straight into their
final memory (or maps them, with ``copy_buffers=False``) and never
unpickles their contents.

Signed entries (flags 1: an HMAC-SHA256 with ``LABCACHE_SECRET``; 2: an
Ed25519 signature with ``LABCACHE_SIGNING_KEY``, naming its signer) sign a
digest of everything after the seal, computed in the same pass as the
checksum.  A reader with ``LABCACHE_SECRET`` or ``LABCACHE_TRUSTED_KEYS``
refuses unsigned, untrusted or altered entries *before* unpickling
anything, because unpickling runs code.  Entries of formats 1 and 2 are
refused as written by an older version (a miss: they are recomputed).
"""

from __future__ import annotations

import io
import json
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import xxhash

from . import _seal, signing
from ._reader import Reader, allocate
from .errors import CorruptEntryError, UnpicklableResultError

__all__ = ["FORMAT_VERSION", "Encoded", "Header", "decode", "encode", "load", "read_header",
           "upload_chunks"]

FORMAT_VERSION = 3
MAGIC = b"LCE3"
_OLD_MAGICS = {b"LCE1": 1, b"LCE2": 2}
_PREFIX = struct.Struct("<4sHHII16sI28x")
_FIXED = struct.Struct("<ddH")
_SIZE = struct.Struct("<Q")
_ALIGN = 64
_MAX_HEADER = 16 * 1024 * 1024
_MAX_PARTS = 1 << 20
_MAX_SEAL = 1024


def secret() -> bytes | None:
    """The signing secret from ``LABCACHE_SECRET``, if any."""
    value = signing.env("LABCACHE_SECRET")
    return value.encode() if value else None


def verifying() -> bool:
    """Whether loads here check signatures (``LABCACHE_SECRET`` or
    ``LABCACHE_TRUSTED_KEYS`` is set).

    Examples:
        >>> isinstance(verifying(), bool)
        True
    """
    return bool(signing.env("LABCACHE_SECRET") or signing.env(signing.TRUSTED_KEYS_VARIABLE))


@dataclass
class Encoded:
    """An entry ready to write: a list of chunks, never joined in memory.

    Storages write ``iter_chunks()`` one after the other; a storage that only
    knows file objects can call ``read()``.
    """

    chunks: list[Any]
    header: Header
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
    #: The name the entry's Ed25519 signature claims (checked only by a load
    #: that trusts keys; a header read alone proves nothing).
    signer: str | None = None
    hmac: bool = False

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



def encode(value: object, meta: dict[str, Any]) -> Encoded:
    """Serialize ``value`` into an entry; raises ``UnpicklableResultError``.

    ``meta`` may carry ``key``, ``created`` and ``compute_seconds``: those go
    to fixed places in the header, where a hit reads them without parsing JSON.

    Examples:
        >>> entry = encode([1, 2, 3], {"function": "demo"})
        >>> decode(bytes(entry))[0]
        [1, 2, 3]
    """
    plan = _seal.plan(secret())  # before pickling: a bad key file loses no work twice
    pickled, buffers = _pickle(value)
    sizes = [len(pickled)] + [view.nbytes for view in buffers]
    head = _header_bytes(meta, sizes)
    seal_length = plan.length if plan else 0
    payload = _layout(_PREFIX.size + seal_length + len(head), pickled, buffers)
    hashes = _seal.Hashes(_seal.new_digest(plan.algorithm) if plan else None)
    for piece in (head, *payload):
        hashes.feed(piece)
    checksum, digest = hashes.digests()
    start = _PREFIX.pack(MAGIC, FORMAT_VERSION, plan.flags if plan else 0, len(sizes),
                         len(head), checksum, seal_length)
    chunks = [start, plan.seal(start, digest), head, *payload] if plan else \
        [start, head, *payload]
    header = _parse_header(head, FORMAT_VERSION, None, len(sizes), checksum)._replace(
        signed=plan is not None, signer=plan.signer.name if plan and plan.signer else None,
        hmac=bool(plan and plan.secret))
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

    ``verify_key``: True checks what the environment asks for
    (``LABCACHE_SECRET``, ``LABCACHE_TRUSTED_KEYS``); bytes check an HMAC
    with that secret (and the environment's trusted keys); False checks no
    signature.  An unusable trusted keys file raises ``KeyFileError``.
    """
    if verify_key is True and not verifying():  # the usual case, kept cheap
        rules = None
    else:
        rules = _seal.policy(verify_key, secret() if verify_key is True else None)
    if rules is None and type(source) is bytes:
        found = _load_small(source)
        if found is not None:
            return found
    if type(source) is bytes:  # a small entry read whole: the usual hit
        start, seal, header, covered, parts = _split_bytes(source, copy_buffers)
        hashes = _seal.hashes_for(rules, seal)
        for piece in covered:
            hashes.feed(piece)
    else:
        reader = Reader(source)
        start, seal, head, header = _read_header(reader, parse_meta=False)
        hashes = _seal.hashes_for(rules, seal)
        parts = _read_payload(reader, head, header, copy_buffers, hashes)
    checksum, digest = hashes.digests()
    if checksum != header.checksum:
        signer = f" (signed by {seal.signer!r})" if seal is not None and seal.signer else ""
        raise CorruptEntryError(f"checksum mismatch: the entry was altered or damaged{signer}")
    if rules is not None:
        _seal.verify(rules, seal, start, digest)
    try:
        value = pickle.loads(parts[0], buffers=parts[1:])
    except Exception as exc:
        raise CorruptEntryError(f"cannot unpickle the entry ({type(exc).__name__}: {exc})") from exc
    return value, header


def decode(source: Any, verify_key: bytes | bool | None = True) -> tuple[Any, Header]:
    """Read an entry back: ``(value, Header)``, its metadata checked too
    (:func:`load` parses it only when asked).

    Examples:
        >>> decode(bytes(encode({"a": 1}, {"function": "f"})))[1].meta
        {'function': 'f'}
    """
    value, header = load(source, verify_key)
    header.meta  # noqa: B018  (raises CorruptEntryError for bad JSON)
    return value, header


def read_header(source: Any) -> Header:
    """Only the header of an entry (cheap: for listings); nothing is unpickled.

    Examples:
        >>> header = read_header(bytes(encode(None, {"function": "f"})))
        >>> header.meta, header.signed, header.signer
        ({'function': 'f'}, False, None)
    """
    return _read_header(Reader(source), parse_meta=True)[3]


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


# -- reading -----------------------------------------------------------------


def _read_header(reader: Reader, parse_meta: bool,
                 ) -> tuple[bytes, _seal.Seal | None, bytes, Header]:
    """(the prefix, the seal, the header bytes, the parsed header); checks
    only their shape."""
    start = reader.read_exact(_PREFIX.size)
    version, flags, count, length, checksum, seal_length = _check_prefix(start)
    seal = _seal.parse(flags, reader.read_exact(seal_length))
    head = reader.read_exact(length)
    header = _parse_header(head, version, seal, count, checksum)
    if parse_meta:
        header.meta  # noqa: B018  (raises CorruptEntryError for bad JSON)
    return start, seal, head, header


def _load_small(data: bytes) -> tuple[Any, Header] | None:
    """The usual hit, an unsigned one-part entry read whole, decoded with as
    little Python as possible; None for anything else, which the general path
    then decodes (or explains what is wrong with it)."""
    fixed_at = _PREFIX.size
    if len(data) < fixed_at + _FIXED.size:
        return None
    magic, version, flags, count, length, checksum, sealed = _PREFIX.unpack_from(data)
    if magic != MAGIC or version != FORMAT_VERSION or count != 1 or flags or sealed:
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


def _split_bytes(data: bytes, copy_buffers: bool,
                 ) -> tuple[bytes, _seal.Seal | None, Header, list[Any], list[Any]]:
    """What :func:`_read_header` and :func:`_read_payload` give, for bytes."""
    if len(data) < _PREFIX.size:
        raise CorruptEntryError(f"truncated entry: {len(data)} bytes")
    start = data[: _PREFIX.size]
    version, flags, count, length, checksum, seal_length = _check_prefix(start)
    head_at = _PREFIX.size + seal_length
    end = head_at + length
    if len(data) < end:
        raise CorruptEntryError(f"truncated entry: needs {end} bytes, has {len(data)}")
    seal = _seal.parse(flags, data[_PREFIX.size : head_at])
    header = _parse_header(data[head_at : end], version, seal, count, checksum)
    covered, parts = _slice_payload(memoryview(data), head_at, end, header, copy_buffers)
    return start, seal, header, covered, parts


def _check_prefix(start: bytes) -> tuple[int, int, int, int, bytes, int]:
    magic, version, flags, count, length, checksum, seal_length = _PREFIX.unpack(start)
    if magic != MAGIC:
        if magic in _OLD_MAGICS:
            raise CorruptEntryError(f"entry format {_OLD_MAGICS[magic]} was written by an "
                                    "older labcache version")
        raise CorruptEntryError("not a labcache entry (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise CorruptEntryError(f"entry format {version} is not {FORMAT_VERSION}; "
                                "it was written by another labcache version")
    if not 0 < count <= _MAX_PARTS or length > _MAX_HEADER or seal_length > _MAX_SEAL:
        raise CorruptEntryError(f"implausible header ({count} parts, {length} bytes, "
                                f"{seal_length}-byte seal)")
    return version, flags, count, length, checksum, seal_length


def _parse_header(head: bytes, version: int, seal: _seal.Seal | None, count: int,
                  checksum: bytes) -> Header:
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
    return Header(version, seal is not None, sizes, checksum, key, created,
                  None if compute != compute else compute, head[meta_at:],
                  seal.signer if seal else None, bool(seal and seal.mac is not None))


def _read_payload(reader: Reader, head: bytes, header: Header, copy_buffers: bool,
                  hashes: _seal.Hashes) -> list[Any]:
    """[pickle, buffer, ...], fed to ``hashes`` (with the header, in file
    order) as they are read: one pass over the bytes, however many hashes."""
    if reader.view is not None:
        return _verify_mapped(reader.view, reader.position, head, header, copy_buffers, hashes)
    hashes.feed(head)
    parts = [reader.read_exact(header.sizes[0])]
    hashes.feed(parts[0])
    for size in header.sizes[1:]:
        hashes.feed(reader.read_exact(_padding(reader.position)))
        parts.append(reader.read_into_new(size, hashes.update))
    if reader.has_more():
        raise CorruptEntryError("trailing bytes after the last part")
    return parts


def _verify_mapped(view: memoryview, offset: int, head: bytes, header: Header,
                   copy_buffers: bool, hashes: _seal.Hashes) -> list[Any]:
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
    _, parts = _slice_payload(view, offset, offset, header, copy_buffers)
    parts[0] = parts[0].tobytes()
    hashes.feed(head)
    hashes.feed(parts[0])
    position = offset + len(parts[0])
    for part in parts[1:]:  # what is hashed is what is returned, copy or view
        pad = _padding(position)
        hashes.feed(view[position : position + pad])
        hashes.feed(part)
        position += pad + len(part)
    return parts


def _slice_payload(view: memoryview, head_at: int, offset: int, header: Header,
                   copy_buffers: bool) -> tuple[list[Any], list[Any]]:
    """Parts of an in-memory entry as views (the header starts at
    ``head_at``, the payload at ``offset``), and what the checksum covers:
    everything from the header on.  Buffers are copied (or not) straight
    from the source."""
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
    return [view[head_at:]], parts
