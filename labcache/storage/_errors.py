"""Where a backend's own errors become :class:`~labcache.errors.StorageError`.

Each backend reaches its service (a Redis server, an S3 endpoint, a file
system) only inside ``with self._errors(doing, *names)``: one
:class:`Boundary` per storage, built once from the backend's exception
types, its place and its credentials.  An exception of those types that
leaves the block becomes one StorageError, on one line, that says where,
what failed and what to do::

    Redis at redis://:***@db:6379/0 prefix team: storage failed to read entry
    'k1' of 'train': ConnectionError: Error 111 connecting to db:6379.
    Connection refused. Check that the server is running and reachable

The original exception is the StorageError's ``__cause__``.  When the text
it shows carries a credential (a client library repeating a URL with its
password), the cause is a copy with that text scrubbed instead, or a
StorageError with the scrubbed text when the type cannot be rebuilt from a
message.  StorageError subclasses OSError, so ``except OSError`` still works.

Passed through unchanged, because they are answers, not failures:
labcache's own errors (an inner boundary has translated it already, or a
``CorruptEntryError``), ``FileNotFoundError`` (the seed's "no such entry"),
and whatever a backend lists in ``keep``.  Answers a backend reads from its
errors (S3's 404, 304 and 412) are handled inside the block, before the
boundary sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from .._redact import scrub
from ..errors import LabcacheError, StorageError

__all__ = ["Boundary", "Translating", "describe", "scrubbed_cause"]

#: Links of a cause chain rebuilt when scrubbing (chains are short; this stops a loop).
_CHAIN_DEPTH = 8


def describe(exc: BaseException) -> str:
    """``Type: text`` of an exception, as its traceback's last line shows it.

    Examples:
        >>> describe(ConnectionRefusedError(111, "Connection refused"))
        'ConnectionRefusedError: [Errno 111] Connection refused'
    """
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True)
class Boundary:
    """How one storage's errors are translated.

    ``where`` names the place as people read it, credentials masked
    (``"Local folder /shared/team"``); ``catch`` lists the backend's
    exception types; ``advice`` says what to do about one of them;
    ``secrets`` are masked in every message (the environment's credentials
    always are).  Calling the boundary gives the context manager.

    Examples:
        >>> errors = Boundary("Local folder /srv/cache", (OSError,),
        ...                   lambda exc: "Check the folder")
        >>> with errors("list the entries of {!r}", "train"):
        ...     raise PermissionError(13, "Permission denied", "train")
        Traceback (most recent call last):
        labcache.errors.StorageError: Local folder /srv/cache: storage failed to list the \
entries of 'train': PermissionError: [Errno 13] Permission denied: 'train'. Check the folder
    """

    where: str
    catch: tuple[type[BaseException], ...]
    advice: Callable[[BaseException], str]
    secrets: tuple[str, ...] = field(default=(), repr=False)
    describe: Callable[[BaseException], str] = describe
    keep: tuple[type[BaseException], ...] = (LabcacheError, FileNotFoundError)

    def __call__(self, doing: str, *names: object) -> Translating:
        """The context manager for one operation: ``doing`` says what it does,
        with ``{}`` fields filled from ``names`` only if it fails."""
        return Translating(self, doing, names)

    def error(self, doing: str, exc: BaseException) -> StorageError:
        """The StorageError for ``exc``, met while doing ``doing``."""
        cause = self.describe(exc).strip().rstrip(".")
        text = f"{self.where}: storage failed to {doing}: {cause}. {self.advice(exc)}"
        return StorageError(" ".join(scrub(text, self.secrets).split()))


class Translating:
    """The context manager a :class:`Boundary` gives; see the module notes."""

    __slots__ = ("_boundary", "_doing", "_names")

    def __init__(self, boundary: Boundary, doing: str, names: tuple[object, ...]) -> None:
        # Only stored: the message is written if the operation fails, so a
        # cache hit pays for no formatting.
        self._boundary, self._doing, self._names = boundary, doing, names

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        boundary = self._boundary
        if exc is None or not isinstance(exc, boundary.catch) or isinstance(exc, boundary.keep):
            return
        # The raw exception stays only as the suppressed __context__ Python
        # sets on any raise inside a handler; no traceback shows it.
        raise boundary.error(self._doing.format(*self._names), exc) from \
            scrubbed_cause(exc, boundary.secrets)


def scrubbed_cause(exc: BaseException, secrets: tuple[str, ...] = ()) -> BaseException:
    """``exc`` itself when no text its traceback would show carries a
    credential, else a copy showing the scrubbed text (the same type when it
    can be built from a message, a StorageError naming the type if not),
    with the same traceback and a scrubbed chain.

    Examples:
        >>> clean = ConnectionError("connection refused")
        >>> scrubbed_cause(clean) is clean
        True
        >>> scrubbed_cause(ConnectionError("no answer from redis://:hunter22@db:6379"))
        ConnectionError('no answer from redis://:***@db:6379')
    """
    return exc if _clean(exc, secrets, _CHAIN_DEPTH) else _scrubbed(exc, secrets, _CHAIN_DEPTH)


def _shown_next(exc: BaseException) -> BaseException | None:
    """The exception a traceback shows before ``exc`` (its cause or context)."""
    return exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def _texts(exc: BaseException) -> list[str]:
    return [str(exc), *(str(note) for note in getattr(exc, "__notes__", ()))]


def _clean(exc: BaseException, secrets: tuple[str, ...], depth: int) -> bool:
    if any(scrub(text, secrets) != text for text in _texts(exc)):
        return False
    inner = _shown_next(exc)
    return inner is None or depth <= 0 or _clean(inner, secrets, depth - 1)


def _scrubbed(exc: BaseException, secrets: tuple[str, ...], depth: int) -> BaseException:
    text = scrub(str(exc), secrets)
    copy: BaseException
    try:
        copy = type(exc)(text)
        if str(copy) != text:  # a type whose text is not its message
            raise TypeError(text)
    except Exception:  # the type needs other arguments (botocore's errors do)
        kind = type(exc)
        copy = StorageError(f"{kind.__module__}.{kind.__qualname__}: {text}")
    notes = getattr(exc, "__notes__", None)
    if notes:  # (set, not add_note: Python 3.10 has no add_note)
        copy.__notes__ = [scrub(note, secrets) for note in notes]
    inner = _shown_next(exc)
    if inner is not None and depth > 0:
        copy.__cause__ = inner if _clean(inner, secrets, depth - 1) else \
            _scrubbed(inner, secrets, depth - 1)
    return copy.with_traceback(exc.__traceback__)
