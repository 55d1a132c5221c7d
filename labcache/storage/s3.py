"""S3Storage: entries and locks as objects in an S3 bucket (or any S3 API).

* An entry is one object, ``<prefix>/<context>/<hashcode>``, put atomically;
  large ones go up in parts read from the entry's chunks, never joined.
* A lock is a small JSON object, ``<prefix>/locks/<name>.lock``, changed only
  by conditional requests (``If-None-Match: *``, ``If-Match: <etag>``); the
  ETag is the version :mod:`labcache.locks` compares and swaps on.
* Only "no such key" and "precondition failed" mean "absent" and "lost the
  race"; any other answer (access denied, no such bucket, endpoint down) is a
  one-line :class:`~labcache.errors.StorageError` (see ``_errors.py``), never
  "unlocked".
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import threading
import time
from functools import partial
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from .. import entry
from .._compress import HEAD_SPAN, frame_chunks, open_frame, unframe_head
from .._redact import redact_url
from ..base import EntryStat, Orphan
from ..locks import RawLock, RecordLockingStorage
from ..names import check_context, check_entry_context, check_name
from . import _s3_copies, _s3_errors, _s3_orphans, _s3_ranged
from ._errors import Boundary
from ._local_copy import (
    KeepsLocalCopies,
    LocalCopies,
    network_options,
    remote_digest,
    split_url_options,
)
from ._s3_streams import Body, ChunkReader, http_date

__all__ = ["S3Storage"]

_LOCK_DIR = "locks"
# What a failed request may mean instead of an error: see _kind().
_MISSING, _LOST, _UNSUPPORTED = "missing", "lost", "unsupported"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_OPTIONS = {"profile_name", "region_name", "aws_access_key_id", "aws_secret_access_key",
            "aws_session_token", "aws_account_id", "config", "verify", "use_ssl", "api_version"}
#: A hit leaves a use marker at most this often per entry and process (seconds).
_MARK_USED_EVERY = 600.0
_SECRETS = ("aws_secret_access_key", "aws_session_token", "aws_access_key_id")


class S3Storage(KeepsLocalCopies, RecordLockingStorage):
    """Entries and locks under ``s3://bucket/prefix``.

    Endpoint and credentials come from the usual boto3 sources (``AWS_*``,
    ``AWS_ENDPOINT_URL``, profiles) or ``client_options`` (``region_name``,
    ``aws_access_key_id``, ``profile_name``, ``config``, ...).  One instance
    per URL, endpoint and options; no network access before the first call.
    ``local_copy``, ``local_copy_limit`` and ``compress`` work as for
    :class:`~labcache.storage.redis.RedisStorage` (docs/network.md).

    Examples:
        >>> S3Storage("s3://lab-results/cache?local_copy=/tmp/lc", endpoint_url="http://s3.lab")
        S3Storage('s3://lab-results/cache', endpoint_url='http://s3.lab', local_copy='/tmp/lc')
    """

    #: Waiters poll: S3 cannot tell anyone that an object was deleted.
    wake_poll_interval = 0.15
    #: Last-Modified and Date are whole seconds: staleness allows for that.
    clock_resolution = 1.0
    #: Entries above this size go up as a multipart upload, in parts this big.
    multipart_threshold = multipart_chunksize = 8 * 2**20
    #: Objects above this size load in parallel ranged GETs of this size.
    range_part_size = 16 * 2**20

    @classmethod
    def _instance_key(cls, url: str, *, endpoint_url: str | None = None, client: Any = None,
                      local_copy: str | os.PathLike[str] | bool | None = None,
                      local_copy_limit: str | int | None = None, compress: bool | str = "auto",
                      **client_options: Any) -> Any:
        plain, url_options = _split(url)
        folder, limit, packing = network_options(url_options, local_copy, local_copy_limit,
                                                 compress)
        # The endpoint taken from the environment is part of the configuration,
        # and so are the local copy and compression.
        return (_parse_url(plain)[2], endpoint_url or _env_endpoint(), client, (folder, limit),
                packing, tuple(sorted(client_options.items())))

    def __init__(self, url: str, *, endpoint_url: str | None = None, client: Any = None,
                 local_copy: str | os.PathLike[str] | bool | None = None,
                 local_copy_limit: str | int | None = None, compress: bool | str = "auto",
                 **client_options: Any) -> None:
        unknown = sorted(set(client_options) - _OPTIONS)
        if unknown:
            raise TypeError(f"S3Storage got unknown options {unknown}; known: {sorted(_OPTIONS)}")
        plain, url_options = _split(url)
        folder, limit, self.compress = network_options(url_options, local_copy,
                                                       local_copy_limit, compress)
        self.bucket, self.prefix, self.url = _parse_url(plain)
        if client is not None and endpoint_url is None:  # shown, and used by a pickled copy
            endpoint_url = getattr(getattr(client, "meta", None), "endpoint_url", None)
        self.endpoint_url: str | None = endpoint_url or _env_endpoint()
        self._options, self._given_client, self._client = dict(client_options), client, client
        self._client_pid, self._client_guard = os.getpid(), threading.Lock()
        self._base = f"{self.prefix}/" if self.prefix else ""
        self._contexts: dict[str, str] = {}  # context -> validated key prefix
        # boto3's errors become StorageError here (see _errors.py); keys given
        # as options are masked (the environment's always are).
        self._errors = Boundary(
            f"S3 at {redact_url(self.endpoint_url) if self.endpoint_url else 'AWS'}, "
            f"bucket {self.bucket}", _s3_errors.ERRORS, _s3_errors.advice,
            secrets=tuple(str(self._options[k]) for k in _SECRETS if self._options.get(k)),
            describe=_s3_errors.describe)
        #: Where loaded entries are kept on this machine (None: nowhere).
        self.local_copy = None if folder is None else LocalCopies(folder, remote_digest(
            "s3", redact_url(self.endpoint_url or ""), self.bucket, self.prefix), limit)

    def __repr__(self) -> str:
        shown = f", endpoint_url={redact_url(self.endpoint_url)!r}" if self.endpoint_url else ""
        if self.local_copy is not None:
            shown += f", local_copy={str(self.local_copy.root)!r}"
        return f"S3Storage({self.url!r}{shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its configuration; a client (sockets, threads) never travels.
        copy = self.local_copy
        return (partial(type(self), self.url, endpoint_url=self.endpoint_url,
                        local_copy=None if copy is None else str(copy.root),
                        local_copy_limit=None if copy is None else copy.limit,
                        compress=self.compress, **self._options), ())

    # -- entries (the seed's BaseStorage) -------------------------------------------

    def get_root_path(self) -> str:
        """``s3://bucket/prefix``, and the endpoint when one is configured."""
        return f"{self.url} at {redact_url(self.endpoint_url)}" if self.endpoint_url else self.url

    def upload_file(
        self, file: object, file_name: str, context: str, direct_stream: bool = False
    ) -> str | None:
        """Store ``file`` (an encoded entry, bytes or a binary file) as one object."""
        key = self._entry_key(file_name, context)
        stream = ChunkReader(frame_chunks(file, self.compress, self.multipart_chunksize))
        config = TransferConfig(multipart_threshold=self.multipart_threshold,
                                multipart_chunksize=self.multipart_chunksize,
                                max_concurrency=4, preferred_transfer_client="classic")
        config.max_in_memory_upload_chunks = 4  # parts read ahead are copies: bound them
        with self._errors("upload s3://{}/{}", self.bucket, key):
            self._s3().upload_fileobj(stream, self.bucket, key, Config=config)
        return file_name

    def download_file(self, hashcode: str, context: str) -> bytes:
        """The stored bytes; ``FileNotFoundError`` if there is no such entry."""
        with self.get_file_by_hashcode(hashcode, context) as body:
            data: bytes = body.read()
            return data

    def get_file_by_hashcode(self, hashcode: str, context: str) -> Any:
        """The entry as a binary stream (read/readinto/close) straight off the
        wire, decompressed if it was sent compressed."""
        key = self._entry_key(hashcode, context)
        # Big objects come in parallel ranged GETs, as boto3's own downloads do.
        return open_frame(_s3_ranged.open_object(self, key, self.range_part_size))

    def check_if_exists(self, hashcode: str, context: str) -> bool:
        """Whether the entry exists (a HEAD request)."""
        key = self._entry_key(hashcode, context)
        return bool(self._call("head_object", key, (_MISSING,)) != _MISSING)

    def delete_file(self, hashcode: str, context: str) -> None:
        """Remove the entry; ``FileNotFoundError`` if it is not there."""
        key = self._entry_key(hashcode, context)
        # S3 deletes a missing key without complaint; LocalStorage raises.
        if self.local_copy is not None:
            self.local_copy.forget(context, hashcode)
        if self._call("head_object", key, (_MISSING,)) == _MISSING:
            raise self._not_found(key)
        self._call("delete_object", key)
        self._call("delete_object", self._marker_key(hashcode, context))  # its use marker

    def list_stored_files(self, context: str) -> list[str]:
        """Names of the entries directly in ``context``, sorted (no sub-contexts)."""
        prefix = self._context_prefix(context)
        return sorted(name for name in self._list(prefix) if not name.startswith("."))

    lists_contexts = True

    def list_contexts(self) -> list[str]:
        """Top-level "folders" under the prefix (``locks`` left out)."""
        found = [item["Prefix"][len(self._base):].rstrip("/")
                 for item in self._listing(self._base, "CommonPrefixes")]
        return sorted(name for name in found if name != _LOCK_DIR and not name.startswith("."))

    def describe_entries(self, context: str) -> list[EntryStat]:
        """Names, sizes and times from the object listing; last use from the
        listing of the use markers (see ``open_entry``)."""
        prefix, marks = self._context_prefix(context), self._marker_key("", context)
        used = {item["Key"][len(marks):]: item["LastModified"].timestamp()
                for item in self._listing(marks)}
        return sorted(EntryStat(item["Key"][len(prefix):], int(item["Size"]),
                                item["LastModified"].timestamp(),
                                used.get(item["Key"][len(prefix):]))
                      for item in self._listing(prefix)
                      if not item["Key"][len(prefix):].startswith("."))

    def open_entry(self, hashcode: str, context: str) -> Any:
        """A hit: the entry's stream, and a use marker when this process has
        not left one for this entry in the last ``_MARK_USED_EVERY`` seconds.

        S3 keeps no access times, so a hit puts an empty object
        ``<prefix>/.used/<context>/<key>`` whose LastModified is the last use
        (by the server's clock).  At most one small PUT per entry and process
        every 10 minutes; a refused PUT (read-only credentials) is ignored.
        """
        try:
            body = self._copy_or_stream(hashcode, context)
        except FileNotFoundError:
            return None
        self._mark_used(hashcode, context)
        return body

    def _mark_used(self, hashcode: str, context: str) -> None:
        marked: dict[tuple[str, str], float] = self.__dict__.setdefault("_marked", {})
        now = time.monotonic()
        if now - marked.get((context, hashcode), -math.inf) >= _MARK_USED_EVERY:
            if len(marked) > 100_000:  # a long-lived process: forget, re-mark later
                marked.clear()
            marked[(context, hashcode)] = now
            with contextlib.suppress(*_s3_errors.ERRORS):  # a hit never fails for its marker
                self._s3().put_object(Bucket=self.bucket, Body=b"",
                                      Key=self._marker_key(hashcode, context))

    # -- local copies (see _local_copy.py and _s3_copies.py) ----------------------

    def _copy_or_stream(self, hashcode: str, context: str) -> Any:
        if self.local_copy is None:
            return self.get_file_by_hashcode(hashcode, context)
        return _s3_copies.open_for_load(self, self.local_copy, hashcode, context)

    def open_mapped(self, hashcode: str, context: str, mode: str = "r") -> Any:
        """The entry's local copy memory-mapped (``mmap_mode``), or None if
        there is no entry.  Without a local copy: the entry read into memory."""
        try:
            if self.local_copy is None:
                with self.get_file_by_hashcode(hashcode, context) as stream:
                    return bytearray(stream.read())
            fd = _s3_copies.current_copy(self, self.local_copy, hashcode, context)
        except FileNotFoundError:
            return None
        self._mark_used(hashcode, context)
        if not isinstance(fd, int):  # the copy could not be kept: read it whole
            with fd:
                return bytearray(fd.read())
        return LocalCopies.as_mapping(fd, mode)

    def _marker_key(self, hashcode: str, context: str) -> str:
        self._context_prefix(context)  # validates the context
        return f"{self._base}.used/{context}/{hashcode}"

    def read_entry_header(self, hashcode: str, context: str) -> entry.Header:
        """The header from a ranged GET of the entry's first 64 KiB."""
        key = self._entry_key(hashcode, context)
        response = self._call("get_object", key, (_MISSING,), Range=f"bytes=0-{HEAD_SPAN}")
        if response == _MISSING:
            raise self._not_found(key)
        with Body(self, key, response) as body:
            return entry.read_header(unframe_head(body.read()))

    def _entry_key(self, hashcode: str, context: str) -> str:
        return self._context_prefix(context) + check_name(hashcode, "file name")

    def _context_prefix(self, context: str) -> str:
        prefix = self._contexts.get(context)
        if prefix is None:
            check_entry_context(context)
            prefix = self._contexts[context] = f"{self._base}{context}/"
        return prefix

    def find_orphans(self) -> list[Orphan]:
        """Incomplete multipart uploads under the prefix (a writer killed
        midway); the age is the time since the last part, by the server's clock."""
        return _s3_orphans.find(self)

    def _remove_orphan(self, orphan: Orphan, older_than: float) -> bool:
        return _s3_orphans.remove(self, orphan, older_than)

    # -- lock primitives ----------------------------------------------------------------

    def _lock_key(self, name: str) -> str:
        return self._base + self._get_lock_path(check_name(name, "lock name"))

    def _lock_create(self, name: str, data: bytes) -> str | None:
        response = self._call("put_object", self._lock_key(name), (_LOST,),
                              Body=data, IfNoneMatch="*")
        return None if response == _LOST else str(response["ETag"])

    def _lock_read(self, name: str) -> RawLock | None:
        key = self._lock_key(name)
        response = self._call("get_object", key, (_MISSING,))
        if response == _MISSING:
            return None
        with Body(self, key, response) as body:
            data = body.read()
        return RawLock(data, _beat(response), str(response["ETag"]))

    def _lock_replace(self, name: str, version: str, data: bytes) -> str | None:
        response = self._call("put_object", self._lock_key(name), (_MISSING, _LOST),
                              Body=data, IfMatch=version)
        return None if isinstance(response, str) else str(response["ETag"])

    def _lock_delete(self, name: str, version: str) -> bool:
        key = self._lock_key(name)
        response = self._call("delete_object", key, (_MISSING, _LOST, _UNSUPPORTED),
                              IfMatch=version)
        if response != _UNSUPPORTED:
            return not isinstance(response, str)
        # No conditional deletes here: check, then delete.  A takeover landing in
        # between (one round trip; only releases and break_lock) would be lost.
        head = self._call("head_object", key, (_MISSING,))
        if head == _MISSING or head["ETag"] != version:
            return False
        self._call("delete_object", key)
        return True

    def _lock_touch(self, name: str, version: str) -> str | None:
        raw = self._lock_read(name)  # the conditional put below is what makes it safe
        fields = _json_object(raw.data) if raw and raw.version == version else None
        if fields is None:
            return None
        # Only the new Last-Modified counts as the beat; the field (ignored by
        # LockRecord.parse) makes each beat's content, and so its ETag, new.
        fields["beat"] = time.time()
        return self._lock_replace(name, version, json.dumps(fields, sort_keys=True).encode())

    def _lock_names(self) -> list[str]:
        return [name[: -len(".lock")] for name in self._list(f"{self._base}{_LOCK_DIR}/")
                if name.endswith(".lock") and not name.startswith(".")]

    # -- requests ---------------------------------------------------------------------------

    def _s3(self) -> Any:
        """The boto3 client, made on first use (and again in a forked child)."""
        with self._client_guard:
            if self._client is None or self._client_pid != os.getpid():
                self._client = self._given_client or self._new_client()
                self._client_pid = os.getpid()
            return self._client

    def _new_client(self) -> Any:
        """A boto3 client (its errors are translated by the caller's boundary)."""
        options = dict(self._options)
        # Fail in seconds, not minutes, when the endpoint is down.
        config = Config(connect_timeout=3, read_timeout=30,
                        retries={"max_attempts": 2, "mode": "standard"})
        options["config"] = config.merge(options["config"]) if options.get("config") else config
        session = boto3.session.Session(profile_name=options.pop("profile_name", None))
        return session.client("s3", endpoint_url=self.endpoint_url, **options)

    def _call(self, operation: str, key: str, expect: tuple[str, ...] = (),
              **params: Any) -> Any:
        """One S3 request: its response, or which of the ``expect``-ed failures it met."""
        with self._errors("{} s3://{}/{}", operation, self.bucket, key):
            try:
                return getattr(self._s3(), operation)(Bucket=self.bucket, Key=key, **params)
            except ClientError as exc:
                kind = _kind(exc)
                if kind is None or kind not in expect:
                    raise
                return kind

    def _listing(self, prefix: str, field: str = "Contents") -> list[dict[str, Any]]:
        """The ``field`` items of a listing of ``prefix`` (its objects, or its
        "folders" for ``CommonPrefixes``); ``Delimiter='/'`` hides deeper ones."""
        with self._errors("list_objects_v2 s3://{}/{}", self.bucket, prefix):
            pages = self._s3().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            return [item for page in pages for item in page.get(field, ())]

    def _list(self, prefix: str) -> list[str]:
        """Object names directly under ``prefix``."""
        return [item["Key"][len(prefix):] for item in self._listing(prefix)]

    def _not_found(self, key: str) -> FileNotFoundError:
        return FileNotFoundError(errno.ENOENT, "no such entry", f"s3://{self.bucket}/{key}")


def _parse_url(url: object) -> tuple[str, str, str]:
    """``(bucket, prefix, normalized url)``; ValueError before any I/O."""
    if not isinstance(url, str) or not url.lower().startswith("s3://"):
        raise ValueError(
            f"S3Storage needs a URL like s3://bucket/prefix, not {redact_url(url)!r}")
    bucket, _, path = url[len("s3://"):].partition("/")
    if not bucket or not _BUCKET.fullmatch(bucket) or ".." in bucket or "?" in url or "#" in url:
        raise ValueError(
            f"S3 URL {redact_url(url)!r} needs a valid bucket name (3-63 lowercase letters, "
            "digits, '.', "
            "'-', '_'; a letter or digit at each end) and no query or fragment")
    prefix = "/".join(part for part in path.split("/") if part)
    if prefix:
        check_context(prefix)  # no '.', '..' or over-long parts
    return bucket, prefix, f"s3://{bucket}/{prefix}".rstrip("/")


def _split(url: object) -> tuple[object, dict[str, str]]:
    """The URL without labcache's options (``?local_copy=...``), and those."""
    if not isinstance(url, str):
        return url, {}
    plain, options = split_url_options(url)
    if "?" in plain:
        raise ValueError(f"S3 URL {redact_url(url)!r} has unknown options; the only ones are "
                         "local_copy, local_copy_limit and compress")
    return plain, options


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _kind(exc: ClientError) -> str | None:
    """What a failed request means to the lock rules, if anything."""
    code, status = _s3_errors.code(exc), _s3_errors.status(exc)
    if _s3_errors.missing(exc):
        return _MISSING
    # 409 ConditionalRequestConflict: a concurrent conditional write won.
    if code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
        return _LOST
    return _UNSUPPORTED if code == "NotImplemented" or status == 501 else None


def _json_object(data: bytes) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError):
        fields = json.loads(data)
        return fields if isinstance(fields, dict) else None
    return None


def _beat(response: dict[str, Any]) -> float:
    """When the lock object was last written, as a time on this host's clock.

    Every beat rewrites the object, so the server's ``Last-Modified`` is the
    last beat; its age is measured against the same server's ``Date`` on this
    response, so neither the holder's clock nor ours enters (both headers are
    whole seconds: ``clock_resolution`` covers that).  Without a ``Date``
    header our own clock stands in for the server's.
    """
    age = 0.0
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    with contextlib.suppress(TypeError, ValueError):
        server_now = http_date(date) if date else time.time()
        age = max(server_now - response["LastModified"].timestamp(), 0.0)
    return time.time() - age
