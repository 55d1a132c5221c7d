"""The seal of an entry: who signed it, and the signatures that prove it.

An entry's seal sits right after its 64-byte prefix (the prefix says how
long it is; an unsigned entry has none)::

    u8 digest algorithm (1 sha256, 2 blake3) | u8 name length | signer name |
    Ed25519 signature (64 bytes, if flag 2) | HMAC-SHA256 (32 bytes, if flag 1)

Both signatures are made over one short *statement*::

    b"labcache-entry-v3\\0" | the 64-byte prefix | the seal up to its signatures |
    digest of everything after the seal (header and payload)

so they cover the format, flags, sizes, checksum, the signer's name, the
metadata and every payload byte, while the payload itself is hashed once,
in the same loop that computes its checksum as it is read.  The Ed25519
key is looked up by the signer's name in the trusted keys; the name being
signed, nobody can claim another person's name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import xxhash

from . import signing
from .errors import CorruptEntryError, SignatureError

__all__ = ["ED25519", "HMAC", "Hashes", "Plan", "Policy", "Seal", "hashes_for", "new_digest",
           "parse", "plan", "policy", "precheck", "refusal", "verify"]

HMAC = 1
ED25519 = 2
SIGNED = HMAC | ED25519
SHA256, BLAKE3 = 1, 2
_DOMAIN = b"labcache-entry-v3\0"
_ED_SIZE, _MAC_SIZE = 64, 32
_CLAIMS = struct.Struct("<BB")
#: Bytes hashed at a time when two hashes read the same bytes: still in the CPU cache.
HASH_CHUNK = 256 * 2**10


@dataclass(frozen=True)
class Policy:
    """What a reader demands: an HMAC with ``secret``, a signer in ``trust``."""

    secret: bytes | None = field(repr=False)  # never shown
    trust: signing.TrustList | None


@dataclass(frozen=True)
class Plan:
    """How a writer signs: the seal's length is known before the payload."""

    secret: bytes | None = field(repr=False)  # never shown
    signer: signing.Signer | None
    algorithm: int

    @property
    def flags(self) -> int:
        return (HMAC if self.secret else 0) | (ED25519 if self.signer else 0)

    @property
    def claims(self) -> bytes:
        name = self.signer.name.encode() if self.signer else b""
        return _CLAIMS.pack(self.algorithm, len(name)) + name

    @property
    def length(self) -> int:
        return (len(self.claims) + (_ED_SIZE if self.signer else 0)
                + (_MAC_SIZE if self.secret else 0))

    def seal(self, start: bytes, digest: bytes) -> bytes:
        """The seal bytes for an entry whose prefix starts with ``start``."""
        message = _statement(start, self.claims, digest)
        ed = self.signer.sign(message) if self.signer else b""
        mac = _mac(self.secret, message) if self.secret else b""
        return self.claims + ed + mac


@dataclass(frozen=True)
class Seal:
    """A parsed seal (nothing verified yet)."""

    algorithm: int
    signer: str | None
    claims: bytes
    ed25519: bytes | None
    mac: bytes | None


def policy(verify_key: bytes | bool | None, secret: bytes | None) -> Policy | None:
    """The checks a load makes; None when nothing is checked (the fast path).

    ``verify_key``: True for the environment's secret and trusted keys, bytes
    for that HMAC secret (and the environment's trusted keys), False or None
    for no check at all.
    """
    if verify_key is None or verify_key is False:
        return None
    key = secret if verify_key is True else bytes(verify_key)
    if key is None and signing.env(signing.TRUSTED_KEYS_VARIABLE) is None:
        return None
    return Policy(key, signing.current_trust())


def plan(secret: bytes | None) -> Plan | None:
    """How entries are signed here now (``LABCACHE_SECRET``, ``LABCACHE_SIGNING_KEY``)."""
    signer = signing.current_signer()
    if secret is None and signer is None:
        return None
    return Plan(secret, signer, _preferred_algorithm())


def parse(flags: int, data: bytes) -> Seal | None:
    """The seal in ``data`` (None for an unsigned entry); checks only its shape."""
    if flags & ~SIGNED:
        raise CorruptEntryError(f"unknown entry flags {flags:#x}")
    if not flags:
        if data:
            raise CorruptEntryError("an unsigned entry carries a seal")
        return None
    if len(data) < _CLAIMS.size:
        raise CorruptEntryError("the entry claims to be signed but carries no seal")
    algorithm, length = _CLAIMS.unpack_from(data)
    end = _CLAIMS.size + length
    sizes = end + (_ED_SIZE if flags & ED25519 else 0) + (_MAC_SIZE if flags & HMAC else 0)
    if algorithm not in (SHA256, BLAKE3) or len(data) != sizes or bool(length) != bool(
            flags & ED25519):
        raise CorruptEntryError("malformed seal (signer or signatures)")
    try:
        name = signing.check_name(data[_CLAIMS.size:end].decode()) if length else None
    except (UnicodeDecodeError, ValueError):
        raise CorruptEntryError("malformed seal (signer name)") from None
    ed = data[end:end + _ED_SIZE] if flags & ED25519 else None
    mac = data[sizes - _MAC_SIZE:] if flags & HMAC else None
    return Seal(algorithm, name, data[:end], ed, mac)


def precheck(rules: Policy, seal: Seal | None) -> None:
    """Refuse, before any payload is read, what no signature could save."""
    if rules.secret is not None and (seal is None or seal.mac is None):
        raise SignatureError("entry is not signed but LABCACHE_SECRET is set")
    if rules.trust is None:
        return
    if seal is None or seal.signer is None:
        raise SignatureError("entry is not signed by anyone but LABCACHE_TRUSTED_KEYS "
                             f"({rules.trust.path}) asks for a trusted signer")
    if not rules.trust.knows(seal.signer):
        raise SignatureError(f"entry signed by {seal.signer!r}, who is not in the trusted "
                             f"keys ({rules.trust.path})")


def verify(rules: Policy, seal: Seal | None, start: bytes, digest: bytes) -> None:
    """Check the signatures over the statement (after :func:`precheck`)."""
    if seal is None:
        return
    message = _statement(start, seal.claims, digest)
    if rules.secret is not None:
        import hmac

        if seal.mac is None or not hmac.compare_digest(seal.mac, _mac(rules.secret, message)):
            raise SignatureError("entry signature does not match LABCACHE_SECRET")
    if rules.trust is not None and seal.signer is not None and seal.ed25519 is not None \
            and not rules.trust.verify(seal.signer, seal.ed25519, message):
        raise SignatureError(f"entry's signature by {seal.signer!r} does not verify with their "
                             "trusted key: it was altered after signing, or signed with "
                             "another key under that name")


class Hashes:
    """The checksum, and the digest the signatures cover when they are
    checked: both fed the same bytes in one pass, a slice at a time."""

    def __init__(self, digest: Any) -> None:
        self.checksum, self.digest = xxhash.xxh3_128(), digest

    def update(self, chunk: Any) -> None:
        self.checksum.update(chunk)
        if self.digest is not None:
            self.digest.update(chunk)

    def feed(self, piece: Any) -> None:
        if self.digest is None or len(piece) <= HASH_CHUNK:
            self.update(piece)
            return
        view = memoryview(piece).cast("B")
        for at in range(0, len(view), HASH_CHUNK):
            self.update(view[at : at + HASH_CHUNK])

    def digests(self) -> tuple[bytes, bytes]:
        return self.checksum.digest(), b"" if self.digest is None else self.digest.digest()


def hashes_for(rules: Policy | None, seal: Seal | None) -> Hashes:
    """Refuse what needs no payload to refuse; hashers for what is left."""
    if rules is None:
        return Hashes(None)
    precheck(rules, seal)
    return Hashes(None if seal is None else new_digest(seal.algorithm))


def refusal(signer: str | None, hmac: bool) -> str | None:
    """Why a load in this process would refuse an entry whose header names
    ``signer`` and says whether it has an ``hmac`` (None: it would not, as
    far as the header tells; a signature is only checked by a load, which
    reads the payload).

    Examples:
        >>> refusal(signer=None, hmac=False) is None  # nothing asked
        True
    """
    if signing.env("LABCACHE_SECRET") and not hmac:
        return "no LABCACHE_SECRET signature"
    trust = signing.current_trust() if signing.env(signing.TRUSTED_KEYS_VARIABLE) else None
    if trust is None:
        return None
    if not signer:
        return "unsigned"
    return None if trust.knows(signer) else f"signer {signer} not trusted"


def new_digest(algorithm: int) -> Any:
    """A fresh hasher for the digest the signatures cover."""
    maker = _MAKERS.get(algorithm)
    if maker is None:
        maker = _MAKERS[algorithm] = _digest_maker(algorithm)
    return maker()


_MAKERS: dict[int, Any] = {}


def _digest_maker(algorithm: int) -> Any:
    if algorithm == BLAKE3:
        try:
            import blake3
        except ImportError:
            raise SignatureError("the entry was signed over a blake3 digest: install blake3 "
                                 "(pip install 'labcache[sign]') to check it") from None
        return blake3.blake3
    import hashlib

    return hashlib.sha256


def _preferred_algorithm() -> int:
    # blake3 hashes a 200 MB payload 3-5x faster than sha256 (one core);
    # sha256 needs nothing installed.
    try:
        import blake3  # noqa: F401
    except ImportError:
        return SHA256
    return BLAKE3


def _statement(start: bytes, claims: bytes, digest: bytes) -> bytes:
    return _DOMAIN + start + claims + digest


def _mac(secret: bytes, message: bytes) -> bytes:
    import hashlib
    import hmac

    return hmac.new(secret, message, hashlib.sha256).digest()

