"""A lock record: who holds a lock, and the one check that a record read
from a storage is valid.

Records are JSON written by labcache processes, but anyone who can write the
storage can put anything there.  ``LockRecord.read`` accepts only a record
whose every field has its type and a sane range, and says in words what is
wrong with any other; the lock rules (``labcache.locks``) then treat such a
record exactly like one that is not JSON at all.

Examples:
    >>> LockRecord.read(b'{"user": "ann"}')
    "no 'host'"
    >>> LockRecord.parse(LockRecord.new(60, 5).to_bytes()).ttl
    60.0
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BOOT_ID", "MAX_SECONDS", "LockRecord", "check_lock_times", "this_host",
           "this_user"]

#: The largest time or duration a record may carry (seconds; the year 2286).
MAX_SECONDS = 1e10
#: The largest process id a record may carry (what ``os.kill`` accepts).
_MAX_PID = 2**31 - 1


def this_host() -> str:
    """This machine's name as lock records show it (``LABCACHE_HOSTNAME`` overrides)."""
    return os.environ.get("LABCACHE_HOSTNAME") or socket.gethostname()


def this_user() -> str:
    """The user name lock records and entries show."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _boot_id() -> str:
    # Two hosts in different containers can share a name but not a boot id;
    # a pid is only meaningful on the same host *and* the same boot.
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


#: This boot of this machine, written in records beside the pid.
BOOT_ID = _boot_id()


@dataclass(frozen=True)
class LockRecord:
    """What a lock says about its holder; serialized as JSON."""

    user: str
    host: str
    boot: str
    pid: int
    token: str
    acquired: float
    ttl: float
    heartbeat_interval: float | None

    @classmethod
    def new(cls, ttl: float, heartbeat_interval: float | None) -> LockRecord:
        """A record for this process, with a fresh token; a ``ttl`` or
        ``heartbeat_interval`` that no record may carry is a ValueError."""
        check_lock_times(ttl, heartbeat_interval)
        return cls(this_user(), this_host(), BOOT_ID, os.getpid(), secrets.token_hex(16),
                   time.time(), float(ttl), heartbeat_interval)

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def parse(cls, data: bytes) -> LockRecord | None:
        """The record in ``data``, or None if it is not a valid record.

        Never raises: a record with missing fields, wrong types or absurd
        values is as unreadable as one that is not JSON (see ``read``).

        Examples:
            >>> LockRecord.parse(b'{"ttl": "3600"}') is None
            True
        """
        found = cls.read(data)
        return found if isinstance(found, LockRecord) else None

    @classmethod
    def read(cls, data: bytes) -> LockRecord | str:
        """The record in ``data``, or why it is not one (for people).

        Examples:
            >>> LockRecord.read(b"[]")
            'not a JSON object'
        """
        try:
            fields = json.loads(data)
        except (ValueError, RecursionError):  # bad UTF-8 is a ValueError too
            return "not JSON"
        if not isinstance(fields, dict):
            return "not a JSON object"
        # Backends may keep extra fields (S3 keeps its beat time here).
        for name, check in _FIELD_CHECKS.items():
            if name not in fields:
                return f"no {name!r}"
            problem = check(name, fields[name])
            if problem:
                return problem
        return cls(fields["user"], fields["host"], fields["boot"], int(fields["pid"]),
                   fields["token"], float(fields["acquired"]), float(fields["ttl"]),
                   _float_or_none(fields["heartbeat_interval"]))


def check_lock_times(ttl: object, heartbeat_interval: object) -> None:
    """Refuse a ``ttl`` or ``heartbeat_interval`` no lock record may carry.

    Examples:
        >>> check_lock_times(3600, 30)
        >>> check_lock_times(3600, 0)
        Traceback (most recent call last):
        ValueError: heartbeat_interval 0 is not a number of seconds in (0, 1e+10], nor None
    """
    problem = _seconds("ttl", ttl) or _optional_seconds("heartbeat_interval",
                                                         heartbeat_interval)
    if problem:
        raise ValueError(problem)


def _in_range(value: object, high: float) -> bool:
    # NaN fails every comparison and infinity is above ``high``; bool is an int
    # to Python, never a number in a record.
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and 0 < value <= high


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _text(name: str, value: object) -> str | None:
    return None if isinstance(value, str) else f"{name} {_shown(value)} is not text"


def _token(name: str, value: object) -> str | None:
    return None if isinstance(value, str) and value else f"{name} {_shown(value)} is not a token"


def _pid(name: str, value: object) -> str | None:
    ok = _in_range(value, _MAX_PID) and isinstance(value, int)
    return None if ok else f"{name} {_shown(value)} is not a process id"


def _time(name: str, value: object) -> str | None:
    return None if _in_range(value, MAX_SECONDS) else f"{name} {_shown(value)} is not a Unix time"


def _seconds(name: str, value: object) -> str | None:
    if _in_range(value, MAX_SECONDS):
        return None
    return f"{name} {_shown(value)} is not a number of seconds in (0, {MAX_SECONDS:g}]"


def _optional_seconds(name: str, value: object) -> str | None:
    problem = None if value is None else _seconds(name, value)
    return problem and problem + ", nor None"


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


#: What each field of a record must be: one check, used for every record read.
_FIELD_CHECKS: dict[str, Callable[[str, object], str | None]] = {
    "user": _text, "host": _text, "boot": _text, "pid": _pid, "token": _token,
    "acquired": _time, "ttl": _seconds, "heartbeat_interval": _optional_seconds,
}
