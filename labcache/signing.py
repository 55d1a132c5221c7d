"""Personal signing keys and the list of keys a process trusts.

A person makes a key pair once with ``labcache keygen NAME --out DIR``:

- ``DIR/NAME.key``, the private key, one line, mode 0600 from its creation::

      labcache-ed25519-private <base64 of the 32-byte Ed25519 seed> NAME

- ``DIR/NAME.pub``, the public key, one line that names its owner::

      labcache-ed25519 <base64 of the 32-byte Ed25519 public key> NAME

``LABCACHE_SIGNING_KEY=DIR/NAME.key`` makes a process sign what it stores;
``LABCACHE_TRUSTED_KEYS=FILE`` (``.pub`` lines, ``#`` comments and blank
lines allowed, like ssh's ``allowed_signers``) makes it load only entries
signed by one of those keys.  Both files are read again as soon as they
change (one ``stat`` per check, a parse only after a change), so deleting a
line un-trusts that key at the next call of every running process.

The ``cryptography`` package (``pip install 'labcache[sign]'``) is imported
only when a key is made, used or checked.  A private key never appears in a
message, a log record or a ``repr``: errors name the file, never its content.

Examples:
    >>> import tempfile
    >>> private, public = keygen("alice", tempfile.mkdtemp())
    >>> public.read_text().split()[::2]
    ['labcache-ed25519', 'alice']
    >>> load_signer(private)
    Signer(name='alice', path=...alice.key')
"""

from __future__ import annotations

import base64
import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import KeyFileError

__all__ = ["PRIVATE_TAG", "PUBLIC_TAG", "Signer", "TrustList", "current_signer",
           "current_trust", "env", "keygen", "load_signer", "load_trust", "public_line",
           "signing_key_set"]

PUBLIC_TAG = "labcache-ed25519"
PRIVATE_TAG = "labcache-ed25519-private"
SIGNING_KEY_VARIABLE = "LABCACHE_SIGNING_KEY"
TRUSTED_KEYS_VARIABLE = "LABCACHE_TRUSTED_KEYS"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}\Z")
_KEY_BYTES = 32
#: Good signatures a trust list remembers (each ~250 bytes).
_REMEMBERED = 4096
_INSTALL = "install it with: pip install 'labcache[sign]'"


def env(name: str) -> str | None:
    """An environment variable, None when unset or empty.

    Hits ask several times per call, and ``os.environ.get`` of an unset name
    costs about 0.6 µs (a KeyError raised and caught), a third of a hit.  So
    values are remembered, and kept right by one audit hook (PEP 578):
    ``os.environ[...] = ...`` and ``del os.environ[...]`` raise the audit
    events ``os.putenv`` / ``os.unsetenv`` with the name and the new value,
    and the hook writes that value down.  A variable set or unset while the
    kernel runs, from any thread, takes effect at the next call.

    Examples:
        >>> env("LABCACHE_SURELY_UNSET_VARIABLE") is None
        True
        >>> os.environ["LABCACHE_EXAMPLE_VARIABLE"] = "on"
        >>> env("LABCACHE_EXAMPLE_VARIABLE")
        'on'
        >>> del os.environ["LABCACHE_EXAMPLE_VARIABLE"]
        >>> env("LABCACHE_EXAMPLE_VARIABLE") is None
        True
    """
    try:
        return _remembered[name]
    except KeyError:
        value = os.environ.get(name) or None
        # setdefault, never an assignment: the hook may have written the new
        # value while this read still saw the old one (the event comes first).
        return _remembered.setdefault(name, value)


def _note_environment_change(event: str, args: tuple[Any, ...]) -> None:
    """The audit hook: called for every audit event, so it tests one thing first."""
    if event not in _ENVIRONMENT_EVENTS:
        return
    try:
        name = os.fsdecode(args[0])
        value = os.fsdecode(args[1]) if event == "os.putenv" else ""
    except (IndexError, TypeError, UnicodeError):
        _remembered.clear()
        return
    if "=" in name or "\0" in name or "\0" in value:  # putenv will refuse it
        _remembered.pop(name, None)
    else:
        _remembered[name] = value or None


_ENVIRONMENT_EVENTS = frozenset({"os.putenv", "os.unsetenv"})
_remembered: dict[str, str | None] = {}
sys.addaudithook(_note_environment_change)


def signing_key_set() -> bool:
    """Whether ``LABCACHE_SIGNING_KEY`` is set (one dictionary lookup: every call asks).

    Examples:
        >>> isinstance(signing_key_set(), bool)
        True
    """
    return env(SIGNING_KEY_VARIABLE) is not None


def check_name(name: str) -> str:
    """``name`` if it can name a signer (letters, digits, ``._@+-``, up to 64).

    Examples:
        >>> check_name("alice@lab")
        'alice@lab'
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"signer name {name!r} is not allowed: use 1 to 64 letters, digits "
                         "and . _ @ + - (starting with a letter or digit), e.g. alice")
    return name


# -- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """A private key and its owner's name; signs messages.  Its ``repr``
    shows the name and the file, never the key."""

    name: str
    path: str
    _key: Any = field(repr=False, compare=False)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return bytes(self._key.sign(message))


class TrustList:
    """The public keys a process trusts, by signer name (several per name
    while a key is being rotated).

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _, pub = keygen("bob", folder)
        >>> trust = TrustList.parse(pub.read_text(), str(pub))
        >>> trust.names()
        ['bob']
    """

    def __init__(self, path: str, keys: dict[str, list[Any]]) -> None:
        self.path, self._keys = path, keys
        # Signatures already found good, by (name, signature, message): a
        # repeated hit of the same entry skips the ~50-200 us Ed25519 check.
        # Sound because verifying is deterministic; it lives and dies with
        # this list, so a changed trust file starts from nothing.
        self._good: set[tuple[str, bytes, bytes]] = set()

    def __repr__(self) -> str:
        return f"TrustList(path={self.path!r}, names={self.names()!r})"

    def names(self) -> list[str]:
        """The trusted signers' names, sorted."""
        return sorted(self._keys)

    def knows(self, name: str | None) -> bool:
        """Whether ``name`` has at least one trusted key."""
        return name is not None and name in self._keys

    def verify(self, name: str, signature: bytes, message: bytes) -> bool:
        """Whether one of ``name``'s trusted keys made ``signature`` over ``message``."""
        if (name, signature, message) in self._good:
            return True
        from cryptography.exceptions import InvalidSignature

        for key in self._keys.get(name, ()):
            try:
                key.verify(signature, message)
            except InvalidSignature:
                continue
            if len(self._good) >= _REMEMBERED:
                self._good.clear()
            self._good.add((name, signature, message))
            return True
        return False

    @classmethod
    def parse(cls, text: str, path: str) -> TrustList:
        """Read ``.pub`` lines; a bad line raises ``KeyFileError`` naming it."""
        ed25519 = _ed25519()
        keys: dict[str, list[Any]] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, raw = _parse_line(line, PUBLIC_TAG, f"{path} line {number}")
            keys.setdefault(name, []).append(
                ed25519.Ed25519PublicKey.from_public_bytes(raw))
        return cls(path, keys)


def public_line(name: str, public: bytes) -> str:
    """The ``.pub`` line for a raw 32-byte public key.

    Examples:
        >>> public_line("alice", bytes(32))
        'labcache-ed25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= alice'
    """
    return f"{PUBLIC_TAG} {base64.b64encode(public).decode()} {check_name(name)}"


def keygen(name: str, out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Make ``OUT/NAME.key`` (mode 0600) and ``OUT/NAME.pub``; never overwrites.

    The private key file is created with mode 0600 in the same system call
    that creates it, so it is never readable by others, even for a moment.

    Examples:
        >>> import tempfile
        >>> key, pub = keygen("carol", tempfile.mkdtemp())
        >>> oct(key.stat().st_mode & 0o777), pub.name
        ('0o600', 'carol.pub')
    """
    check_name(name)
    ed25519 = _ed25519()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise FileExistsError(f"{path} already exists: keygen never overwrites a key "
                                  "(remove it yourself, or choose another --out or name)")
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes_raw()
    public = key.public_key().public_bytes_raw()
    _write_new(private_path, f"{PRIVATE_TAG} {base64.b64encode(seed).decode()} {name}\n", 0o600)
    try:
        _write_new(public_path, public_line(name, public) + "\n", 0o644)
    except BaseException:
        private_path.unlink()
        raise
    return private_path, public_path


def load_signer(path: str | os.PathLike[str]) -> Signer:
    """The key in a ``.key`` file; refuses a file others can read.

    Raises ``KeyFileError`` naming the file (never quoting it) when it is
    missing, malformed or too open.
    """
    text = str(path)
    try:
        with open(text, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if mode & 0o077:
                raise KeyFileError(
                    f"signing key {text} can be read by others (mode "
                    f"{oct(stat.S_IMODE(mode))}): run chmod 600 {text}")
            raw = file.read(4096)
    except OSError as exc:
        raise KeyFileError(f"cannot read the signing key {text} "
                           f"({exc.strerror or type(exc).__name__})") from None
    try:
        line = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        line = ""
    name, seed = _parse_line(line, PRIVATE_TAG, f"signing key {text}")
    key = _ed25519().Ed25519PrivateKey.from_private_bytes(seed)
    return Signer(name, text, key)


def load_trust(path: str | os.PathLike[str]) -> TrustList:
    """The trust file at ``path``; ``KeyFileError`` naming it if unreadable."""
    text = str(path)
    try:
        content = Path(text).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise KeyFileError(f"cannot read the trusted keys file {text} ({reason})") from None
    return TrustList.parse(content, text)


# -- what the environment configures, re-read when the files change -----------------------


class _Cached:
    """One file's parsed content, kept while its path and stat stay the same."""

    def __init__(self, load: Callable[[str], Any]) -> None:
        self._load = load
        self._seen: tuple[Any, ...] | None = None
        self._value: Any = None

    def get(self, path: str) -> Any:
        try:
            st = os.stat(path)
            seen: tuple[Any, ...] = (path, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns,
                                     st.st_mode)
        except OSError:
            seen = (path,)  # missing: load() raises the error that names it
        if seen != self._seen:
            self._value = self._load(path)
            self._seen = seen
        return self._value


_signers = _Cached(load_signer)
_trusts = _Cached(load_trust)


def current_signer() -> Signer | None:
    """The key ``LABCACHE_SIGNING_KEY`` names, or None when it is unset."""
    path = env(SIGNING_KEY_VARIABLE)
    return None if path is None else _signers.get(os.path.expanduser(path))


def current_trust() -> TrustList | None:
    """The keys ``LABCACHE_TRUSTED_KEYS`` lists, or None when it is unset.

    The file is ``stat``-ed on every call and parsed again only when it changed.
    """
    path = env(TRUSTED_KEYS_VARIABLE)
    return None if path is None else _trusts.get(os.path.expanduser(path))


# -- helpers ---------------------------------------------------------------------------------


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise KeyFileError(f"signing keys need the cryptography package: {_INSTALL}") from None
    return ed25519


def _parse_line(line: str, tag: str, where: str) -> tuple[str, bytes]:
    """(name, 32 raw key bytes) from ``TAG BASE64 NAME``; errors quote nothing."""
    parts = line.split()
    expected = f"'{tag} <base64 key> NAME'"
    if len(parts) != 3 or parts[0] != tag:
        hint = (" (this is a private key: list .pub lines only)"
                if parts[:1] == [PRIVATE_TAG] else "")
        raise KeyFileError(f"{where} is not a {expected} line{hint}")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raw = b""
    if len(raw) != _KEY_BYTES:
        raise KeyFileError(f"{where}: the key is not 32 bytes of base64")
    try:
        return check_name(parts[2]), raw
    except ValueError as exc:
        raise KeyFileError(f"{where}: {exc}") from None


def _write_new(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away; never adds any for the key
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
