"""RedisStorage: entries and locks in a Redis server shared by a team.

* An entry is one Redis value when small; a large one is split into chunks
  (provisional until published, see :mod:`._redis_chunks`) and a small
  manifest naming them is swapped in last, so a reader sees the old entry or
  the new one, and values past Redis's 512 MB limit still store.  Old chunks
  expire a minute after being replaced, so a reader in the middle finishes.
* A lock is ``SET NX PX`` of its record; releasing, taking over and beating
  are Lua compare-and-delete / compare-and-set / compare-and-extend on that
  exact record, so only its holder changes it.  A dead holder's lock expires
  by itself (``PX`` is three heartbeats, or ``ttl`` without heartbeat), and
  the remaining ``PTTL`` tells when it last beat by the server's clock.
* A release is published on a channel, so waiters wake at once instead of
  polling; polling once a second is only the fallback.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import redis
import xxhash

from .. import entry
from .._compress import HEAD_SPAN, frame_chunks, open_frame, unframe_head
from .._redact import redact_url as _redact
from ..base import EntryStat, Orphan
from ..lock_record import LockRecord
from ..locks import MISSED_BEATS, UNREADABLE_LOCK_TTL, RawLock, RecordLockingStorage
from ..names import check_entry_context, check_name
from . import _redis_chunks
from . import _redis_client as _client
from ._errors import Boundary
from ._local_copy import KeepsLocalCopies, LocalCopies, copy_stream, network_options, remote_digest
from ._local_copy import split_url_options as _split_url_options
from ._redis_client import Chunks, check_url, client_from_url, password_of, url_of
from ._redis_client import glob_escape as _glob_escape

__all__ = ["RedisStorage"]

_CHUNK = 16 << 20  # measured faster than 64 MB through redis-py, and a smaller spike

# KEYS[1] lock; ARGV[1] the record we expect. Each acts only on that record.
_REPLACE = "if redis.call('GET', KEYS[1]) == ARGV[1] then " \
           "return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) else return false end"
_DELETE = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]); " \
          "redis.call('PUBLISH', KEYS[2], 'released'); return 1 else return 0 end"
_EXTEND = "if redis.call('GET', KEYS[1]) == ARGV[1] then " \
          "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"
# An unreadable record set by hand may have no expiry (or a long one): give it
# the unreadable bound, so it is gone that long after labcache first saw it.
# Returns the milliseconds left (-2: the record changed meanwhile).
_CAP = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -2 end " \
       "local left = redis.call('PTTL', KEYS[1]) " \
       "if left < 0 or left > tonumber(ARGV[2]) then " \
       "redis.call('PEXPIRE', KEYS[1], ARGV[2]) return tonumber(ARGV[2]) end return left"
_UNREADABLE_MS = int(UNREADABLE_LOCK_TTL * 1000)
# Idle seconds of many keys in one call (-1: gone, -2: no LRU clock under an
# LFU policy): 100,000 pipelined OBJECT IDLETIME cost ~3 s of client time.
_IDLE = "local out = {} for i, key in ipairs(KEYS) do " \
        "local ok, idle = pcall(redis.call, 'OBJECT', 'IDLETIME', key) " \
        "if ok then out[i] = idle or -1 else out[i] = -2 end end return out"
_IDLE_BATCH = 5000
# A hit with a local copy: a small inline value whole (a copy would not save a
# round trip), else only the first bytes, which tell the version (see _version).
_PROBE = "local head = redis.call('GETRANGE', KEYS[1], 0, 127) " \
         "if head == '' then return false end " \
         "if string.sub(head, 1, 1) == 'I' and " \
         "redis.call('STRLEN', KEYS[1]) <= tonumber(ARGV[1]) then " \
         "return {0, redis.call('GET', KEYS[1])} end return {1, head}"
#: Values up to this size are fetched whole on a hit, never copied locally.
_COPY_MIN = 32 * 1024


class RedisStorage(KeepsLocalCopies, RecordLockingStorage):
    """Entries and locks in Redis, under keys that start with ``prefix:``.

    The prefix (default ``labcache``) is given as an argument or in the URL,
    ``redis://host:6379/0?prefix=team``; it holds only ASCII letters, digits,
    ``_``, ``-`` and ``.``, never ``:``, so no prefix reaches another's keys.

    ``local_copy=PATH`` (``True``: the user cache dir) keeps loaded entries
    on this machine, checked against the server on each hit;
    ``local_copy_limit`` bounds that folder (default 10 GB); ``compress``
    (``"auto"``, True, False) sends entries compressed when it pays.  All
    three may also be given in the URL (docs/network.md).

    Examples:
        >>> RedisStorage("redis://:s3cret@db.example:6379/0", prefix="team")
        RedisStorage('redis://:***@db.example:6379/0', prefix='team')
        >>> RedisStorage("redis://db.example:6379/0?local_copy=/tmp/lc&compress=0")
        RedisStorage('redis://db.example:6379/0', prefix='labcache', local_copy='/tmp/lc')
        >>> RedisStorage("redis://db.example:6379/0?prefix=team") is RedisStorage(
        ...     "redis://db.example:6379/0", prefix="team")
        True
        >>> RedisStorage("redis://")
        Traceback (most recent call last):
        ValueError: Redis URL 'redis://' has no host; write redis://host:6379/0
    """

    #: Waiters are woken by pub/sub; this is only how often they re-check.
    wake_poll_interval = 1.0

    #: Waiters are woken by pub/sub as soon as a lock is released.
    wakes_waiters = True

    @classmethod
    def _instance_key(cls, url: str | redis.Redis = "redis://localhost:6379/0",
                      prefix: str | None = None, *, chunk_size: int = _CHUNK,
                      local_copy: str | os.PathLike[str] | bool | None = None,
                      local_copy_limit: str | int | None = None,
                      compress: bool | str = "auto") -> Any:
        # One instance per configuration however it is spelled: the prefix as
        # an argument or as ?prefix= in the URL, or the default one; the same
        # for the local copy and compression.
        url, options = _split_url_options(url) if isinstance(url, str) else (url, {})
        folder, limit, packing = network_options(options, local_copy, local_copy_limit, compress)
        if isinstance(url, str):
            url, prefix = _client.configured(url, prefix)
        elif prefix is None:
            prefix = _client.DEFAULT_PREFIX
        return url, prefix, chunk_size, (folder, limit), packing

    def __init__(self, url: str | redis.Redis = "redis://localhost:6379/0",
                 prefix: str | None = None, *, chunk_size: int = _CHUNK,
                 local_copy: str | os.PathLike[str] | bool | None = None,
                 local_copy_limit: str | int | None = None,
                 compress: bool | str = "auto") -> None:
        url, options = _split_url_options(url) if isinstance(url, str) else (url, {})
        folder, limit, self.compress = network_options(options, local_copy, local_copy_limit,
                                                       compress)
        # redis-py's responses are typed bytes | str; ours are always bytes.
        self.client: Any
        if isinstance(url, str):
            url, self.prefix = _client.configured(url, prefix)
            self.url = check_url(url)
            # Long socket timeout: a 64 MB chunk must fit through it.
            self.client = client_from_url(self.url)
        else:
            self.prefix = _client.check_prefix(_client.DEFAULT_PREFIX if prefix is None else prefix)
            self.client, self.url = url, url_of(url)
        self.chunk_size = chunk_size
        # redis-py's errors become StorageError here (see _errors.py).
        password = password_of(self.client)
        self._errors = Boundary(f"Redis at {self.get_root_path()}", (redis.RedisError,),
                                _client.advice, secrets=(password,) if password else ())
        self._scripts = {name: self.client.register_script(source) for name, source in
                         (("replace", _REPLACE), ("delete", _DELETE), ("extend", _EXTEND),
                          ("idle", _IDLE), ("cap", _CAP), ("publish", _redis_chunks.PUBLISH),
                          ("remove", _redis_chunks.DELETE), ("orphans", _redis_chunks.REMOVE),
                          ("probe", _PROBE))}
        #: Where loaded entries are kept on this machine (None: nowhere).
        self.local_copy = None if folder is None else LocalCopies(
            folder, remote_digest("redis", _redact(self.url), self.prefix), limit)

    def __repr__(self) -> str:
        copy = f", local_copy={str(self.local_copy.root)!r}" if self.local_copy else ""
        return f"RedisStorage({_redact(self.url)!r}, prefix={self.prefix!r}{copy})"

    def __reduce__(self) -> tuple[Any, ...]:
        copy = self.local_copy
        return (functools.partial(
            type(self), self.url, self.prefix, chunk_size=self.chunk_size,
            local_copy=None if copy is None else str(copy.root),
            local_copy_limit=None if copy is None else copy.limit, compress=self.compress), ())

    def get_root_path(self) -> str:
        """The server and key prefix, without any password."""
        return f"{_redact(self.url)} prefix {self.prefix}"

    def server_settings(self) -> dict[str, str | None]:
        """``maxmemory_policy``: how the server evicts keys when full (None if
        it refuses ``CONFIG GET``)."""
        with self._errors("read the server's settings"):
            return {"maxmemory_policy": _client.eviction_policy(self.client)}

    def lock_warnings(self) -> list[str]:
        """A warning when the server's memory policy may evict held locks."""
        risk = _client.eviction_risk(self.server_settings()["maxmemory_policy"])
        return [risk] if risk else []

    # -- entries -----------------------------------------------------------------

    def upload_file(self, file: object, file_name: str, context: str,
                    direct_stream: bool = False) -> str | None:
        """Store an entry; big ones in chunks, made visible all at once."""
        key = self._entry_key(file_name, context)
        pieces = _pieces(frame_chunks(file, self.compress, self.chunk_size), self.chunk_size)
        head, size = [], 0
        for piece in pieces:  # read until the entry is known to be small, or not
            head.append(piece)
            size += len(piece)
            if size > _redis_chunks.INLINE_LIMIT:
                break
        with self._errors("store entry {!r} of {!r}", file_name, context):
            self._publish(key, file_name, context, head, size, pieces)
        return file_name

    def _publish(self, key: str, file_name: str, context: str, head: list[memoryview],
                 size: int, pieces: Iterator[memoryview]) -> None:
        """Write the entry inline, or its chunks and then its manifest."""
        generation, chunks = "", list[str]()
        try:
            if size <= _redis_chunks.INLINE_LIMIT:
                value = b"".join([_redis_chunks.INLINE, *head])
            else:
                value, generation, size = _redis_chunks.write(
                    self.client, self._chunk_key, itertools.chain(head, pieces), self.chunk_size,
                    chunks)
            # The size goes in a per-context hash, so listings never read (and
            # so never touch the LRU clock of) the entry itself.
            self._scripts["publish"](
                keys=[key, self._sizes_key(context), self._gens_key(context), *chunks],
                args=[value, file_name, size, generation, self._chunk_prefix(),
                      _redis_chunks.LINGER_SECONDS])
        except BaseException:
            # Cleaning up must not hide the failure; left behind, they expire by themselves.
            with contextlib.suppress(redis.RedisError):
                if chunks:
                    self.client.delete(*chunks)
            raise

    def download_file(self, hashcode: str, context: str) -> bytes:
        """The entry's bytes; ``FileNotFoundError`` if missing."""
        with self.get_file_by_hashcode(hashcode, context) as stream:
            return stream.read()  # type: ignore[no-any-return]

    def get_file_by_hashcode(self, hashcode: str, context: str) -> Any:
        """The entry as a file object that fetches chunks as they are read
        (and decompresses what was sent compressed)."""
        key = self._entry_key(hashcode, context)
        with self._errors("read entry {!r} of {!r}", hashcode, context):
            value = self.client.get(key)
            if value is None:
                raise FileNotFoundError(f"no entry {hashcode!r} in context {context!r}")
            return open_frame(self._chunks(value))

    def _chunks(self, value: bytes) -> Chunks:
        """The stored bytes behind an entry's value (inline, or its chunks)."""
        if value[:1] == _redis_chunks.INLINE:
            return Chunks(self.client, self._errors, [], memoryview(value)[1:])
        return Chunks(self.client, self._errors, self._chunk_keys(value))

    # -- local copies (see _local_copy.py) ----------------------------------------

    def open_entry(self, hashcode: str, context: str) -> Any:
        """A hit: with a local copy, one small read tells whether the copy
        is still the stored version; only a new version is fetched."""
        copies = self.local_copy
        try:
            if copies is None:
                return self.get_file_by_hashcode(hashcode, context)
            with self._errors("read entry {!r} of {!r}", hashcode, context):
                fd = self._copy_fd(copies, hashcode, context)
        except FileNotFoundError:
            return None
        return fd if not isinstance(fd, int) else copies.as_source(fd)

    def open_mapped(self, hashcode: str, context: str, mode: str = "r") -> Any:
        """The entry's local copy memory-mapped (``mmap_mode``), or None if
        there is no entry.  Without a local copy: the entry read into memory."""
        copies = self.local_copy
        try:
            with self._errors("read entry {!r} of {!r}", hashcode, context):
                fd = self._copy_fd(copies, hashcode, context) if copies else \
                    self.get_file_by_hashcode(hashcode, context)
        except FileNotFoundError:
            return None
        if isinstance(fd, int):
            return LocalCopies.as_mapping(fd, mode)
        with contextlib.closing(fd) if hasattr(fd, "close") else contextlib.nullcontext():
            return bytearray(fd.read() if hasattr(fd, "read") else fd)

    def _copy_fd(self, copies: LocalCopies, hashcode: str, context: str) -> Any:
        """A descriptor on the current version's copy, a small entry's bytes,
        or (if the copy cannot be written) the entry's stream."""
        key = self._entry_key(hashcode, context)
        found = self._scripts["probe"](keys=[key], args=[_COPY_MIN])
        if found is None:
            copies.forget(context, hashcode)
            raise FileNotFoundError(f"no entry {hashcode!r} in context {context!r}")
        whole, data = found[0] == 0, found[1]
        if whole:
            with open_frame(self._chunks(data)) as stream:
                return stream.read()
        fd = copies.open(context, hashcode, _version(data))
        if fd is not None:
            return fd
        value = self.client.get(key)
        if value is None:
            raise FileNotFoundError(f"no entry {hashcode!r} in context {context!r}")

        def fill(target: Any) -> None:
            with open_frame(self._chunks(value)) as stream:
                copy_stream(stream, target)

        fd = copies.keep_or_none(context, hashcode, _version(value), fill)
        return open_frame(self._chunks(value)) if fd is None else fd

    def check_if_exists(self, hashcode: str, context: str) -> bool:
        """Whether the entry exists."""
        key = self._entry_key(hashcode, context)
        with self._errors("look for entry {!r} of {!r}", hashcode, context):
            return bool(self.client.exists(key))

    def delete_file(self, hashcode: str, context: str) -> None:
        """Remove the entry; ``FileNotFoundError`` if it is not there."""
        self._delete(hashcode, context, linger=False)

    def _delete(self, hashcode: str, context: str, linger: bool) -> None:
        keys = [self._entry_key(hashcode, context), self._sizes_key(context),
                self._gens_key(context)]
        args = [hashcode, self._chunk_prefix(), _redis_chunks.LINGER_SECONDS if linger else 0]
        if self.local_copy is not None:
            self.local_copy.forget(context, hashcode)
        with self._errors("delete entry {!r} of {!r}", hashcode, context):
            removed = self._scripts["remove"](keys=keys, args=args)
        if not removed:
            raise FileNotFoundError(f"no entry {hashcode!r} in context {context!r}")

    def evict_entry(self, hashcode: str, context: str) -> None:
        """Delete for eviction: a chunked entry's chunks linger a minute, so a
        reader already streaming them still gets the whole value."""
        self._delete(hashcode, context, linger=True)

    def list_stored_files(self, context: str) -> list[str]:
        """Entry names in ``context``, found with SCAN (never KEYS)."""
        start = self._entry_prefix(context)
        return sorted(key[len(start):].decode() for key in
                      self._scan(start, "the entries of {!r}", context))

    def _scan(self, start: str, doing: str, *names: object) -> list[bytes]:
        """Every key that begins with ``start`` (SCAN, never KEYS); ``doing``
        says what the listing is for."""
        with self._errors("list " + doing, *names):
            return list(self.client.scan_iter(match=_glob_escape(start) + "*", count=1000))

    lists_contexts = True

    def list_contexts(self) -> list[str]:
        """Contexts that hold entries, from one SCAN over entry keys."""
        start = f"{self.prefix}:e:"
        # The context is quoted (no ':'), the entry name may hold one: cut at the first.
        found = {key.decode()[len(start):].partition(":")[0]
                 for key in self._scan(start, "the functions (contexts)")}
        return sorted(unquote(name) for name in found)

    def describe_entries(self, context: str) -> list[EntryStat]:
        """Names, sizes and last access (``OBJECT IDLETIME``, which touches
        nothing, from one Lua call per 5,000 keys); modification times unknown."""
        names = self.list_stored_files(context)
        if not names:
            return []
        start = self._entry_prefix(context)  # names from SCAN are valid already
        keys = [start + name for name in names]
        with self._errors("describe the entries of {!r}", context):
            idles: list[int] = []
            for at in range(0, len(keys), _IDLE_BATCH):
                idles += self._scripts["idle"](keys=keys[at : at + _IDLE_BATCH])
            now = time.time()
            sizes = dict(zip(names, self.client.hmget(self._sizes_key(context), names),
                             strict=True))
            sizes.update(self._measure([name for name in names if sizes[name] is None],
                                       context))
        return [EntryStat(name, int(sizes[name]), None,
                          now - idle if idle >= 0 else None)  # None: LFU policy or gone
                for name, idle in zip(names, idles, strict=True)
                if idle != -1 and sizes.get(name) is not None]  # deleted since the SCAN

    def _measure(self, names: list[str], context: str) -> dict[str, int]:
        """Sizes of entries stored before sizes were recorded (these reads
        touch them once), written down so the next listing need not."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.getrange(self._entry_key(name, context), 0, 0).strlen(
                self._entry_key(name, context))
        answers = pipe.execute() if names else []
        sizes = {}
        for name, kind, length in zip(names, answers[::2], answers[1::2], strict=True):
            if not kind:  # deleted meanwhile
                continue
            size = length - 1
            if kind == _redis_chunks.MANIFEST:  # the value only names the chunks: add them up
                value = self.client.get(self._entry_key(name, context))
                if value is None:  # deleted since
                    continue
                size = sum(json.loads(value[1:])["sizes"])
            sizes[name] = max(size, 0)
        if sizes:
            self.client.hset(self._sizes_key(context), mapping=sizes)
        return sizes

    def read_entry_header(self, hashcode: str, context: str) -> entry.Header:
        """The header from the first bytes of the entry (never the whole value)."""
        key = self._entry_key(hashcode, context)
        with self._errors("read the header of entry {!r} of {!r}", hashcode, context):
            head = self._untouched("getrange", key, 0, HEAD_SPAN)
            if not head:
                raise FileNotFoundError(f"no entry {hashcode!r} in context {context!r}")
            if head[:1] == _redis_chunks.MANIFEST:
                value = self._untouched("get", key)
                if value is None:  # deleted since the first read
                    raise FileNotFoundError(f"no entry {hashcode!r} in context {context!r}")
                first_chunk = self._chunk_keys(value)[0]
                head = b"_" + self.client.getrange(first_chunk, 0, HEAD_SPAN)
        return entry.read_header(unframe_head(head[1:]))

    def _untouched(self, command: str, *args: Any) -> Any:
        """One read that, on Redis 7.2+ (``CLIENT NO-TOUCH``), leaves the key's
        idle time alone, so looking at an entry does not count as using it."""
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("CLIENT", "NO-TOUCH", "ON")
        getattr(pipe, command)(*args)
        pipe.execute_command("CLIENT", "NO-TOUCH", "OFF")
        answer = pipe.execute(raise_on_error=False)[1]  # older servers refuse NO-TOUCH
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _entry_key(self, name: str, context: str) -> str:
        check_name(name, "file name")
        check_entry_context(context)
        # Quoting keeps ':' out of the context, so a prefix match never
        # reaches into another context.
        return f"{self.prefix}:e:{quote(context, safe='/')}:{name}"

    def _entry_prefix(self, context: str) -> str:
        """What every entry key of ``context`` starts with (the context validated)."""
        return self._entry_key("x", context)[:-1]

    def _sizes_key(self, context: str) -> str:
        return f"{self.prefix}:s:{quote(context, safe='/')}"

    def _chunk_prefix(self) -> str:
        return f"{self.prefix}:c:"

    def _chunk_key(self, generation: str, index: int) -> str:
        return f"{self._chunk_prefix()}{generation}:{index}"

    def _chunk_keys(self, manifest_value: bytes) -> list[str]:
        """The chunk keys a manifest value names, in order."""
        manifest = json.loads(manifest_value[1:])
        return [self._chunk_key(manifest["gen"], i) for i in range(len(manifest["sizes"]))]

    def _gens_key(self, context: str) -> str:
        """The hash of entry name -> chunk generation for ``context``."""
        return f"{self.prefix}:g:{quote(context, safe='/')}"

    # -- leftovers of killed writers ----------------------------------------------------

    def find_orphans(self) -> list[Orphan]:
        """Chunks no entry names: a writer killed before publishing (they
        also expire by themselves), or an entry evicted or deleted by hand."""
        with self._errors("look for chunks of interrupted stores"):
            return _redis_chunks.find(self)

    def _remove_orphan(self, orphan: Orphan, older_than: float) -> bool:
        with self._errors("remove the leftover {}", orphan.where):
            return _redis_chunks.remove(self, orphan, older_than)

    # -- lock primitives ------------------------------------------------------------

    def _lock_create(self, name: str, data: bytes) -> str | None:
        key = self._lock_key(name)
        with self._errors("take lock {!r}", name):
            created = self.client.set(key, data, nx=True, px=_expiry_ms(data))
        return data.decode("latin-1") if created else None

    def _lock_read(self, name: str) -> RawLock | None:
        key = self._lock_key(name)
        with self._errors("read lock {!r}", name):
            pipe = self.client.pipeline(transaction=True)
            pipe.get(key)
            pipe.pttl(key)
            data, remaining_ms = pipe.execute()
            if data is None:
                return None
            record = LockRecord.parse(data)
            if record is None and not 0 <= remaining_ms <= _UNREADABLE_MS:
                remaining_ms = self._scripts["cap"](keys=[key], args=[data, _UNREADABLE_MS])
        return RawLock(data, _last_beat(record, remaining_ms), data.decode("latin-1"))

    def _lock_replace(self, name: str, version: str, data: bytes) -> str | None:
        key = self._lock_key(name)
        with self._errors("take over lock {!r}", name):
            done = self._scripts["replace"](
                keys=[key], args=[version.encode("latin-1"), data, _expiry_ms(data)])
        return data.decode("latin-1") if done else None

    def _lock_delete(self, name: str, version: str) -> bool:
        keys = [self._lock_key(name), self._channel(name)]
        with self._errors("release lock {!r}", name):
            return bool(self._scripts["delete"](keys=keys, args=[version.encode("latin-1")]))

    def _lock_touch(self, name: str, version: str) -> str | None:
        key, data = self._lock_key(name), version.encode("latin-1")
        with self._errors("refresh lock {!r}", name):
            done = self._scripts["extend"](keys=[key], args=[data, _expiry_ms(data)])
        return version if done else None

    def _lock_names(self) -> list[str]:
        start = f"{self.prefix}:locks/"
        return [key.decode()[len(start):-len(".lock")]
                for key in self._scan(start, "the locks") if key.endswith(b".lock")]

    def wait_for_release(self, lock_name: str, seconds: float) -> None:
        """Sleep until the lock's release is published, or ``seconds`` pass."""
        channel, key = self._channel(lock_name), self._lock_key(lock_name)
        with self._errors("wait for lock {!r}", lock_name):
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(channel)
                if not self.client.exists(key):
                    return  # released before we subscribed
                deadline = time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    if pubsub.get_message(timeout=left) is not None:
                        return
            finally:
                pubsub.close()

    def _lock_key(self, name: str) -> str:
        return f"{self.prefix}:{self._get_lock_path(check_name(name, 'lock name'))}"

    def _channel(self, name: str) -> str:
        return f"{self.prefix}:released:{name}"


def _pieces(views: Iterator[memoryview], limit: int) -> Iterator[memoryview]:
    """The upload as memoryviews of at most ``limit`` bytes, without joining."""
    for view in views:
        for start in range(0, len(view), limit):
            yield view[start:start + limit]


def _version(value: bytes) -> str:
    """Which version of an entry a stored value is, from its first 128 bytes:
    an inline value's entry prefix holds the checksum of the whole entry, a
    chunked one's manifest a random generation id, new at every write."""
    return xxhash.xxh3_128_hexdigest(value[:128])


def _expiry_ms(data: bytes) -> int:
    """How long a lock lives without a beat (see ``_lifetime_ms``)."""
    return _lifetime_ms(LockRecord.parse(data))


def _lifetime_ms(record: LockRecord | None) -> int:
    """3 heartbeats, or the ttl without heartbeat, or the unreadable bound."""
    if record is None:
        return _UNREADABLE_MS
    seconds = MISSED_BEATS * record.heartbeat_interval if record.heartbeat_interval \
        else record.ttl
    return max(int(seconds * 1000), 1)


def _last_beat(record: LockRecord | None, remaining_ms: int) -> float:
    """When the lock was last set or extended, from the server's countdown."""
    now = time.time()
    if remaining_ms < 0:  # a valid record set by hand without expiry (or changed meanwhile)
        return record.acquired if record else now
    return now - (_lifetime_ms(record) - remaining_ms) / 1000

