"""The redis-py side of RedisStorage: a client from a URL, checked before any
I/O and never showing its password, the server's eviction policy, what to do
about its errors, and a file over an entry's chunks."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import SplitResult, quote, unquote_plus, urlsplit, urlunsplit

import redis

from .._redact import redact_url, scrub
from ._errors import Boundary

__all__ = ["DEFAULT_PREFIX", "Chunks", "advice", "check_prefix", "check_url", "client_from_url",
           "configured", "eviction_policy", "eviction_risk", "glob_escape", "password_of",
           "url_of"]

#: The key prefix of a RedisStorage given none, in its arguments or its URL.
DEFAULT_PREFIX = "labcache"
MAX_PREFIX = 64
#: The one ``maxmemory-policy`` that never evicts a key labcache wrote.
SAFE_POLICY = "noeviction"
# No ':' (it separates the parts of every key, so prefix "team" would reach
# into "team:e:ctx"'s keys), no glob characters (listings SCAN by pattern),
# no spaces or '/'.  A leading '.' or '-' is refused to keep prefixes plain.
_PREFIX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def check_prefix(prefix: object) -> str:
    """``prefix`` if it is a safe Redis key prefix, else a ValueError.

    Examples:
        >>> check_prefix("team-2")
        'team-2'
        >>> check_prefix("team:e:ctx")
        Traceback (most recent call last):
        ValueError: Redis key prefix 'team:e:ctx' is not allowed: use 1 to 64 ASCII ...
    """
    if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX or not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"Redis key prefix {prefix!r} is not allowed: use 1 to {MAX_PREFIX} ASCII letters, "
            "digits, '_', '-' or '.' (not first), e.g. prefix='team'. ':' separates the parts "
            "of labcache's keys and '*', '?', '[' are patterns, so another prefix would see "
            "or clear this storage's keys")
    return prefix


def configured(url: str, prefix: str | None) -> tuple[str, str]:
    """``(url without its prefix option, prefix)`` from a URL that may carry
    ``?prefix=NAME`` and a ``prefix`` argument (which must then agree).

    Examples:
        >>> configured("redis://cache:6379/0?prefix=vision", None)
        ('redis://cache:6379/0', 'vision')
        >>> configured("redis://cache:6379/0", None)
        ('redis://cache:6379/0', 'labcache')
    """
    parts = _split(url)
    kept, found = [], []
    for item in parts.query.split("&") if parts.query else []:
        name, _, value = item.partition("=")
        if unquote_plus(name) == "prefix":
            found.append(unquote_plus(value))
        else:
            kept.append(item)
    if len(found) > 1:
        raise ValueError(f"Redis URL {redact_url(url)!r} gives the key prefix more than once; "
                         "give ?prefix=NAME once")
    if found and prefix is not None and found[0] != prefix:
        raise ValueError(f"Redis URL {redact_url(url)!r} says prefix {found[0]!r} but the "
                         f"prefix argument says {prefix!r}; give it in one place")
    if found:
        url = urlunsplit(parts._replace(query="&".join(kept)))
    return url, check_prefix(found[0] if found else DEFAULT_PREFIX if prefix is None else prefix)


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed '[' in the host
        raise ValueError(f"Redis URL {redact_url(url)!r} is malformed ({exc}); write "
                         "redis://host:6379/0") from None


def check_url(url: str) -> str:
    """``url`` with its scheme in lower case (as redis-py wants), or a ValueError."""
    parts = _split(url)
    try:
        host = parts.hostname
    except ValueError as exc:  # e.g. an unclosed '[' in the host
        raise ValueError(f"Redis URL {redact_url(url)!r} is malformed ({exc}); write "
                         "redis://host:6379/0") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"Redis URL {redact_url(url)!r} must start with redis:// or rediss://")
    if not host:
        raise ValueError(f"Redis URL {redact_url(url)!r} has no host; write redis://host:6379/0")
    return parts.scheme + url[len(parts.scheme):]


def client_from_url(url: str) -> Any:
    """A client for ``url``, or a ValueError naming what is wrong, before any I/O."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=60)
        pool = client.connection_pool
        pool.connection_class(**pool.connection_kwargs)  # unknown options fail here, offline
    except (ValueError, TypeError) as exc:
        raise ValueError(scrub(
            f"Redis URL {redact_url(url)!r} is not valid ({exc}); write redis://host:6379/0, "
            "with only redis-py's connection options in the query")) from None
    return client


def glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN ``MATCH`` pattern.

    Examples:
        >>> glob_escape("team[1]*")
        'team\\\\[1\\\\]\\\\*'
    """
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def password_of(client: Any) -> str | None:
    """The client's password, to scrub from messages (None if unknown)."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    return kwargs.get("password") if isinstance(kwargs, dict) else None


def url_of(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    password = kwargs.get("password")
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/{db}"


def advice(exc: BaseException) -> str:
    """What to do about a failed Redis command, in words.

    Examples:
        >>> advice(redis.ConnectionError("Error 111 connecting to db:6379"))
        'Check that the server is running and reachable from this machine'
    """
    answer = str(exc)
    if isinstance(exc, redis.AuthenticationError) or answer.startswith(("WRONGPASS", "NOAUTH")):
        return "Check the user name and password in the storage URL"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return "Check that the server is running and reachable from this machine"
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return "This Redis user may not run labcache's commands (ACL): grant them, or use another"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "This server is a read-only replica: give labcache the primary's URL"
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or "maxmemory" in answer:
        return ("The server is out of memory (maxmemory): free memory on it, raise the "
                "limit, or remove old entries (labcache gc)")
    return "See the server's answer above; check the server and the storage URL"


def eviction_policy(client: Any) -> str | None:
    """The server's ``maxmemory-policy``, or None where ``CONFIG`` is refused
    (disabled, renamed or not permitted, as on many managed servers)."""
    try:
        answer = client.config_get("maxmemory-policy")
    except redis.ResponseError:
        return None
    policy = answer.get("maxmemory-policy")
    return str(policy) if policy else None


def eviction_risk(policy: str | None) -> str | None:
    """What ``policy`` can do to labcache's locks, or None if it is safe or unknown.

    Every policy but ``noeviction`` may evict a lock key: ``allkeys-*`` any
    key, ``volatile-*`` keys with an expiry, which lock keys always carry.

    Examples:
        >>> eviction_risk("noeviction") is None, eviction_risk(None) is None
        (True, True)
        >>> eviction_risk("volatile-lru").startswith("Redis maxmemory-policy volatile-lru")
        True
    """
    if policy is None or policy == SAFE_POLICY:
        return None
    return (f"Redis maxmemory-policy {policy} may evict a held lock when the server is full "
            "(lock keys carry an expiry, so volatile-* policies evict them too), and a "
            "second process then computes the same key at the same time; set "
            f"maxmemory-policy {SAFE_POLICY} on this server, or give labcache a server "
            "that never evicts")


class Chunks:
    """A read-only binary file over an entry's chunks, fetched one at a time
    so a load never holds the whole entry twice; ``errors`` is the storage's
    error boundary, which the fetches cross."""

    def __init__(self, client: Any, errors: Boundary, keys: list[str], first: Any = b"") -> None:
        self._client, self._errors, self._keys = client, errors, list(keys)
        self._current = memoryview(first)

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        done = 0
        while done < len(view):
            if not self._current and not self._next_chunk():
                break
            taken = min(len(view) - done, len(self._current))
            view[done:done + taken] = self._current[:taken]
            self._current = self._current[taken:]
            done += taken
        return done

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            parts = [bytes(self._current)]
            self._current = memoryview(b"")
            while self._next_chunk():
                parts.append(bytes(self._current))
                self._current = memoryview(b"")
            return b"".join(parts)
        buffer = bytearray(size)
        return bytes(buffer[: self.readinto(buffer)])

    def _next_chunk(self) -> bool:
        if not self._keys:
            return False
        key = self._keys.pop(0)
        with self._errors("read chunk {} of an entry", key):
            value = self._client.get(key)
        self._current = memoryview(value or b"")  # a vanished chunk reads as truncation
        return value is not None

    def close(self) -> None:
        self._keys, self._current = [], memoryview(b"")

    def __enter__(self) -> Chunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
