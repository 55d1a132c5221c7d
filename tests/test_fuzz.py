"""Bad input, fuzzed: names, entry bytes and storage URLs.

Whatever arrives (a traversal in a name, a damaged or forged entry, a
malformed URL), labcache answers with a clear ``ValueError`` or a miss with
a warning: never another exception, never a file outside the storage root,
never an unpickled payload it was told not to trust.

Entries are built with ``entry.encode`` or a real ``@cached`` store and then
damaged, so these tests do not depend on the header layout.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from labcache import CacheWarning, LocalStorage, cached, open_storage
from labcache.base import BaseStorage
from labcache.entry import FORMAT_VERSION, MAGIC, decode, encode
from labcache.errors import CorruptEntryError, InvalidNameError, SignatureError
from labcache.names import check_entry_context, check_name

from .support import workers

# LABCACHE_FUZZ_EXAMPLES / LABCACHE_FUZZ_SMALL raise the example counts for a long run.
FUZZ = settings(max_examples=int(os.environ.get("LABCACHE_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
SMALL = settings(FUZZ, max_examples=int(os.environ.get("LABCACHE_FUZZ_SMALL", "40")))

# -- names -------------------------------------------------------------------------------------

ADVERSARIAL = ["", ".", "..", "...", "../x", "../../etc/passwd", "a/../../b", "/abs", "//x",
               "a\\b", "..\\..\\x", "C:x", "c:\\x", "a\x00b", "\x00", "x" * 181, "é" * 91,
               "x" * 4000, "locks", "locks/x", ".hidden", "a//b", "a/./b", "a/", "~", "$HOME",
               "*", "a b", "名前", "\ud800", "a\udcffb", "%2e%2e", "a\nb", "\u202e", "x" * 180,
               "é" * 90, "🙂", "NUL", "con", "-", "_"]
NAMES = st.one_of(
    st.sampled_from(ADVERSARIAL),
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from("./\\\x00aé~:"), max_size=12),
    st.builds(lambda n, c: c * n, st.integers(150, 300), st.sampled_from(["x", "é", "/"])),
)
CONTEXTS = st.one_of(NAMES, st.lists(NAMES, min_size=1, max_size=3).map("/".join))


def _valid(check: Callable[[Any], Any], value: str) -> bool:
    try:
        check(value)
    except ValueError:
        return False
    return True


def snapshot(folder: Path, skip: Path) -> list[str]:
    """Every path under ``folder`` except the ``skip`` subtree (the storage root)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            dirnames[:] = []
            continue
        found += [os.path.join(dirpath, name) for name in dirnames + filenames]
    return sorted(path for path in found if Path(path) != skip)


@pytest.fixture
def surroundings(tmp_path: Path, storage: LocalStorage) -> Iterator[Callable[[], None]]:
    """A check that nothing appeared or vanished outside the storage root,
    in the test's folder or the folder around it."""
    parent = tmp_path.parent
    before = (snapshot(tmp_path, storage.root), sorted(os.listdir(parent)))

    def unchanged() -> None:
        assert (snapshot(tmp_path, storage.root), sorted(os.listdir(parent))) == before

    yield unchanged
    unchanged()


def inside(root: Path, path: str | os.PathLike[str]) -> bool:
    real = os.path.realpath(path)
    return os.path.commonpath([os.path.realpath(root), real]) == os.path.realpath(root)


#: Every storage method that takes a file name and a context: (storage, name, context).
FILE_METHODS: dict[str, Callable[[Any, str, str], Any]] = {
    "upload_file": lambda s, n, c: s.upload_file(b"data", n, c),
    "download_file": lambda s, n, c: s.download_file(n, c),
    "get_file_by_hashcode": lambda s, n, c: s.get_file_by_hashcode(n, c),
    "check_if_exists": lambda s, n, c: s.check_if_exists(n, c),
    "delete_file": lambda s, n, c: s.delete_file(n, c),
    "read_entry_header": lambda s, n, c: s.read_entry_header(n, c),
}
CONTEXT_METHODS: dict[str, Callable[[Any, str], Any]] = {
    "list_stored_files": lambda s, c: s.list_stored_files(c),
    "describe_entries": lambda s, c: s.describe_entries(c),
}
LOCK_METHODS: dict[str, Callable[[Any, str], Any]] = {
    "try_acquire_lock": lambda s, n: s.try_acquire_lock(n, ttl=60),
    "release_lock": lambda s, n: s.release_lock(n),
    "lock_info": lambda s, n: s.lock_info(n),
    "break_lock": lambda s, n: s.break_lock(n),
    "_is_locked": lambda s, n: s._is_locked(n),
    "wait_for_unlock": lambda s, n: s.wait_for_unlock(n, timeout=0),
}
LOCAL_ONLY: dict[str, Callable[[Any, str, str], Any]] = {
    "entry_path": lambda s, n, c: s.entry_path(n, c),
}


def refused(call: Callable[[], Any]) -> None:
    """``call`` raises a ValueError that names the problem and what to do."""
    with pytest.raises(ValueError) as caught:
        result = call()
        if hasattr(result, "close"):
            result.close()
    assert isinstance(caught.value, InvalidNameError)
    message = str(caught.value)
    assert "invalid" in message and any(word in message for word in ("use ", "choose")), message


def round_trip(storage: Any, name: str, context: str) -> None:
    """A valid name works through every method and comes back unchanged."""
    data = b"payload:" + name.encode()
    assert storage.upload_file(data, name, context) == name
    assert storage.check_if_exists(name, context)
    assert storage.download_file(name, context) == data
    with storage.get_file_by_hashcode(name, context) as stream:
        assert stream.read() == data
    assert name in storage.list_stored_files(context)
    assert name in [stat.name for stat in storage.describe_entries(context)]
    storage.delete_file(name, context)
    assert not storage.check_if_exists(name, context)
    assert name not in storage.list_stored_files(context)


def lock_round_trip(storage: Any, name: str) -> None:
    assert storage.try_acquire_lock(name, ttl=60)
    info = storage.lock_info(name)
    assert info is not None and info.name == name
    assert name in [lock.name for lock in storage.list_locks()]
    storage.release_lock(name)
    assert storage.lock_info(name) is None


@FUZZ
@given(name=NAMES, context=CONTEXTS, method=st.sampled_from(sorted(FILE_METHODS)))
def test_local_file_and_context_names(storage: LocalStorage, surroundings: Callable[[], None],
                                      name: str, context: str, method: str) -> None:
    if not (_valid(check_name, name) and _valid(check_entry_context, context)):
        listing = snapshot(storage.root.parent, storage.root.parent / "nothing")
        refused(lambda: FILE_METHODS[method](storage, name, context))
        refused(lambda: LOCAL_ONLY["entry_path"](storage, name, context))
        assert snapshot(storage.root.parent, storage.root.parent / "nothing") == listing
    else:
        path = storage.entry_path(name, context)
        assert inside(storage.root, path) and path.name == name
        round_trip(storage, name, context)
        # Start the next example empty: an entry name may equal a folder that an
        # earlier example's nested context left behind ("a" beside "a/b").
        shutil.rmtree(storage.root)
    surroundings()


@FUZZ
@given(context=CONTEXTS, method=st.sampled_from(sorted(CONTEXT_METHODS)))
def test_local_context_only_methods(storage: LocalStorage, surroundings: Callable[[], None],
                                    context: str, method: str) -> None:
    if _valid(check_entry_context, context):
        assert CONTEXT_METHODS[method](storage, context) == []
    else:
        refused(lambda: CONTEXT_METHODS[method](storage, context))
    surroundings()


@FUZZ
@given(name=NAMES, method=st.sampled_from(sorted(LOCK_METHODS)))
def test_local_lock_names(storage: LocalStorage, surroundings: Callable[[], None],
                          name: str, method: str) -> None:
    if _valid(check_name, name):
        lock_round_trip(storage, name)
        assert inside(storage.root, storage.root / storage._get_lock_path(name))
    else:
        listing = snapshot(storage.root.parent, storage.root.parent / "nothing")
        refused(lambda: LOCK_METHODS[method](storage, name))
        assert snapshot(storage.root.parent, storage.root.parent / "nothing") == listing
    surroundings()


@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85"])
def test_control_characters_are_refused_in_every_name(storage: LocalStorage, char: str) -> None:
    """Newlines in S3 keys fail on the server, and escapes in names would
    reach terminals through listings: refused up front, like NUL."""
    refused(lambda: storage.upload_file(b"x", f"a{char}b", "ctx"))
    refused(lambda: storage.upload_file(b"x", "key", f"a{char}b"))
    refused(lambda: storage.try_acquire_lock(f"a{char}b", ttl=60))
    assert not storage.root.exists()


def _network_names(storage: Any, keys: Callable[[], Any], name: str, context: str,
                   method: str) -> None:
    if _valid(check_name, name) and _valid(check_entry_context, context):
        round_trip(storage, name, context)
        lock_round_trip(storage, name)
        return
    before = keys()
    refused(lambda: FILE_METHODS[method](storage, name, context))
    if not _valid(check_name, name):
        refused(lambda: storage.try_acquire_lock(name, ttl=60))
    assert keys() == before


@SMALL
@given(name=NAMES, context=CONTEXTS, method=st.sampled_from(sorted(FILE_METHODS)))
def test_redis_names(redis_storage: Any, name: str, context: str, method: str) -> None:
    _network_names(redis_storage, lambda: sorted(redis_storage.client.keys("*")), name,
                   context, method)


@SMALL
@given(name=NAMES, context=CONTEXTS, method=st.sampled_from(sorted(FILE_METHODS)))
def test_s3_names(s3_storage: Any, name: str, context: str, method: str) -> None:
    def keys() -> list[str]:
        listed = s3_storage._s3().list_objects_v2(Bucket=s3_storage.bucket)
        return sorted(item["Key"] for item in listed.get("Contents", ()))

    _network_names(s3_storage, keys, name, context, method)


# -- entry bytes -------------------------------------------------------------------------------

META = {"function": "fuzz.f", "key": "k" * 32, "created": 1.0e9, "compute_seconds": 0.5}
VALUES: list[Any] = [None, 42, "text", {"a": [1, 2.5, None]}, b"x" * 300,
                     np.arange(1000, dtype=np.float64), [np.ones((7, 3)), "tail"]]
TEAM, OTHER = "team-secret-0123456789", "someone-else-9876543210"


class Marker:
    """A value whose *unpickling* leaves a file behind: proof that it ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (workers.touch, (self.path,))


def encoded(value: Any, secret: str | None, monkeypatch: pytest.MonkeyPatch) -> bytes:
    with monkeypatch.context() as patch:
        if secret:
            patch.setenv("LABCACHE_SECRET", secret)
        else:
            patch.delenv("LABCACHE_SECRET", raising=False)
        return bytes(encode(value, META))


def decode_all_ways(data: bytes, tmp_path: Path) -> list[Any]:
    """Decode from bytes, from a BytesIO and from a real file; the values, or
    the CorruptEntryError each raised (any other exception fails the test)."""
    results: list[Any] = []
    path = tmp_path / "entry.bin"
    path.write_bytes(data)
    for source in (data, io.BytesIO(data)):
        results.append(_decode(source))
    with open(path, "rb") as file:
        results.append(_decode(file))
    return results


def _decode(source: Any) -> Any:
    try:
        return decode(source)[0]
    except CorruptEntryError as exc:  # SignatureError included
        assert str(exc)  # says what is wrong
        return exc


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(type(a) is type(b) and a == b)


def version_offset(data: bytes) -> tuple[int, bytes]:
    """Where the format version sits (found via MAGIC and FORMAT_VERSION), and its bytes."""
    for packed in (struct.pack("<H", FORMAT_VERSION), struct.pack("<I", FORMAT_VERSION)):
        if data[len(MAGIC): len(MAGIC) + len(packed)] == packed:
            return len(MAGIC), packed
    needle = b'"format":%d' % FORMAT_VERSION  # a JSON header
    at = data.index(needle) + len(needle) - len(str(FORMAT_VERSION))
    return at, str(FORMAT_VERSION).encode()


def signature_span(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Where the signature sits: the bytes two secrets sign differently."""
    one, two = encoded(VALUES[3], TEAM, monkeypatch), encoded(VALUES[3], OTHER, monkeypatch)
    assert len(one) == len(two)
    differ = [i for i in range(len(one)) if one[i] != two[i]]
    return differ[0], differ[-1] + 1


@pytest.mark.parametrize("secret", [None, TEAM])
@FUZZ
@given(data=st.one_of(st.binary(max_size=400),
                      st.binary(max_size=400).map(lambda tail: MAGIC + tail),
                      st.binary(min_size=60, max_size=200).map(
                          lambda tail: MAGIC + struct.pack("<H", FORMAT_VERSION) + tail)))
def test_random_bytes_are_corrupt(data: bytes, secret: str | None, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    if secret:
        monkeypatch.setenv("LABCACHE_SECRET", secret)
    for result in decode_all_ways(data, tmp_path):
        assert isinstance(result, CorruptEntryError)


@pytest.mark.parametrize("secret", [None, TEAM])
@FUZZ
@given(index=st.integers(0, len(VALUES) - 1), cut=st.floats(0, 1, exclude_max=True))
def test_truncated_entries_are_corrupt(index: int, cut: float, secret: str | None,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = encoded(VALUES[index], secret, monkeypatch)
    if secret:
        monkeypatch.setenv("LABCACHE_SECRET", secret)
    for result in decode_all_ways(data[: int(len(data) * cut)], tmp_path):
        assert isinstance(result, CorruptEntryError)


@pytest.mark.parametrize("secret", [None, TEAM])
@FUZZ
@given(index=st.integers(0, len(VALUES) - 1), flips=st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=3))
def test_flipped_bits_are_corrupt_or_harmless(index: int, flips: list[tuple[float, int]],
                                              secret: str | None, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged entry never decodes to a different value.  Without a secret
    a flip in the (unchecked) signature bytes is harmless; with one, every
    flip is refused."""
    original = encoded(VALUES[index], secret, monkeypatch)
    data = bytearray(original)
    for where, bit in flips:
        data[int(where * len(data))] ^= 1 << bit
    assume(bytes(data) != original)  # two flips of one bit cancel out
    if secret:
        monkeypatch.setenv("LABCACHE_SECRET", secret)
    for result in decode_all_ways(bytes(data), tmp_path):
        if secret:
            assert isinstance(result, CorruptEntryError)
        else:
            assert isinstance(result, CorruptEntryError) or same(result, VALUES[index])


@FUZZ
@given(version=st.integers(0, 2**16 - 1).filter(lambda v: v != FORMAT_VERSION),
       index=st.integers(0, len(VALUES) - 1))
def test_other_format_versions_are_corrupt(version: int, index: int, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    data = encoded(VALUES[index], None, monkeypatch)
    at, packed = version_offset(data)
    if packed.isdigit():  # a JSON header: write another number
        replacement = str(version).encode()
    else:
        replacement = version.to_bytes(len(packed), "little")
    changed = data[:at] + replacement + data[at + len(packed):]
    for result in decode_all_ways(changed, tmp_path):
        assert isinstance(result, CorruptEntryError)
        assert "format" in str(result) or "version" in str(result) or "checksum" in str(result)


@FUZZ
@given(signature=st.binary(min_size=1, max_size=64), index=st.integers(0, len(VALUES) - 1),
       writer=st.sampled_from([None, TEAM, OTHER]))
def test_wrong_signatures_are_refused(signature: bytes, index: int, writer: str | None,
                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start, end = signature_span(monkeypatch)
    data = bytearray(encoded(VALUES[index], writer, monkeypatch))
    spliced = (signature * (end - start))[: end - start]
    data[start:end] = spliced
    monkeypatch.setenv("LABCACHE_SECRET", TEAM)
    expected_ok = writer == TEAM and bytes(spliced) == encoded(
        VALUES[index], TEAM, monkeypatch)[start:end]
    for result in decode_all_ways(bytes(data), tmp_path):
        if expected_ok:
            assert same(result, VALUES[index])
        else:  # an unsigned entry has no signature there: its header bytes were hit
            assert isinstance(result, SignatureError if writer else CorruptEntryError)


# -- never unpickled ---------------------------------------------------------------------------


def test_marker_payload_runs_when_trusted(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The proof below can fail: without a secret the marker payload does run."""
    marker = tmp_path / "ran"
    decode(encoded(Marker(str(marker)), None, monkeypatch))
    assert marker.exists()
    marker.unlink()
    monkeypatch.setenv("LABCACHE_SECRET", TEAM)
    decode(encoded(Marker(str(marker)), TEAM, monkeypatch))
    assert marker.exists()


@pytest.mark.parametrize("writer", [None, OTHER, "team-secret-0123456788"])
@pytest.mark.parametrize("damage", ["none", "signature", "payload", "truncate"])
def test_untrusted_payload_is_never_unpickled(writer: str | None, damage: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    data = bytearray(encoded(Marker(str(marker)), writer, monkeypatch))
    start, end = signature_span(monkeypatch)
    if damage == "signature":
        data[start:end] = encoded(Marker(str(marker)), TEAM, monkeypatch)[start:end][::-1]
    elif damage == "payload":
        data[-3] ^= 0x01
    elif damage == "truncate":
        del data[-1:]
    monkeypatch.setenv("LABCACHE_SECRET", TEAM)
    for result in decode_all_ways(bytes(data), tmp_path):
        assert isinstance(result, CorruptEntryError)
    assert not marker.exists()


def test_signed_then_altered_marker_is_never_unpickled(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A genuine signed entry whose payload is swapped for the marker's (same
    length, so every size still matches) is refused before unpickling."""
    marker = tmp_path / "ran"
    bad = encoded(Marker(str(marker)), TEAM, monkeypatch)
    good = bytearray(encoded("x" * 10, TEAM, monkeypatch))
    start, end = signature_span(monkeypatch)
    bad_with_good_signature = bad[:start] + bytes(good[start:end]) + bad[end:]
    monkeypatch.setenv("LABCACHE_SECRET", TEAM)
    for result in decode_all_ways(bad_with_good_signature, tmp_path):
        assert isinstance(result, SignatureError)
    assert not marker.exists()


# -- the cached call: a damaged entry is a miss with a warning -----------------------------------


def _calls(storage: LocalStorage, log: list[int]) -> Any:
    @cached(storage=storage)
    def square(x: int) -> Any:
        log.append(x)
        return np.arange(x) ** 2

    return square


def _call_with_warnings(func: Any, arg: int) -> tuple[Any, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = func(arg)
    return result, caught


@pytest.mark.parametrize("secret", [None, TEAM])
@SMALL
@given(damage=st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("random"), st.floats(0, 1), st.integers(0, 2**31)),
))
def test_damaged_entry_is_a_miss_with_a_warning(storage: LocalStorage, secret: str | None,
                                                monkeypatch: pytest.MonkeyPatch,
                                                damage: tuple[str, float, int]) -> None:
    if secret:
        monkeypatch.setenv("LABCACHE_SECRET", secret)
    log: list[int] = []
    square = _calls(storage, log)
    square.refresh(50)
    path = storage.entry_path(square.key(50), square.context)
    good = path.read_bytes()
    kind, where, number = damage
    data = bytearray(good)
    if kind == "flip":
        data[int(where * len(data))] ^= 1 << number
    elif kind == "truncate":
        del data[int(where * len(data)):]
    else:
        data = bytearray(np.random.default_rng(number).bytes(int(where * 500)))
    path.write_bytes(bytes(data))
    try:
        decode(bytes(data))
        intact = True
    except CorruptEntryError:
        intact = False
    log.clear()
    result, caught = _call_with_warnings(square, 50)
    assert np.array_equal(result, np.arange(50) ** 2)
    if intact:  # a harmless flip (unchecked signature bytes without a secret)
        assert log == []
    else:
        assert log == [50]
        assert any(issubclass(w.category, CacheWarning) and "unusable" in str(w.message)
                   for w in caught), [str(w.message) for w in caught]
        assert decode(path.read_bytes())[0].tolist() == result.tolist()  # rewritten, whole


def test_unsigned_entry_planted_for_a_cached_call_never_runs(
        storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran"
    log: list[int] = []
    square = _calls(storage, log)
    path = storage.entry_path(square.key(9), square.context)
    storage.upload_file(encoded(Marker(str(marker)), None, monkeypatch), path.name,
                        square.context)
    monkeypatch.setenv("LABCACHE_SECRET", TEAM)
    result, caught = _call_with_warnings(square, 9)
    assert np.array_equal(result, np.arange(9) ** 2) and log == [9]
    assert any("not signed" in str(w.message) for w in caught)
    assert not marker.exists()


# -- storage URLs ------------------------------------------------------------------------------

SECRET_WORD = "pw-Zq81xK"
URL_PIECES = st.sampled_from([
    "file://", "file:///", "redis://", "rediss://", "s3://", "unix://", "nope://", "://", "",
    "/", "//", "?", "#", "@", ":", ":0", ":99999", ":-1", ":abc", "[", "]", "[::1]", "..",
    "/../", "%00", "\x00", "%2e%2e/", "localhost", "127.0.0.1", "bucket", "Bucket", "a" * 70,
    "db", "/0", "/x", "?shared=1", "?shared=maybe", "?db=x", "?foo=1", "&", "=", " ",
    f":{SECRET_WORD}@", f"user:{SECRET_WORD}@", f"?password={SECRET_WORD}",
    f"?aws_secret_access_key={SECRET_WORD}", "\ud800", "é", "\\", "locks",
])
URLS = st.one_of(
    st.text(max_size=40),
    st.lists(URL_PIECES, min_size=1, max_size=7).map("".join),
    st.tuples(st.sampled_from(["file://", "redis://", "rediss://", "s3://"]),
              st.lists(URL_PIECES, max_size=6).map("".join)).map("".join),
)


@FUZZ
@given(url=st.one_of(URLS, st.none(), st.integers(), st.binary(max_size=10)))
# Bare paths get a file:// hint: one that cannot be encoded, or that carries a secret.
@example(url="\ud800")
@example(url=f"/srv/cache?password={SECRET_WORD}")
@example(url="cache\x00dir")
@example(url="~nosuchuser/cache")
def test_any_storage_url_opens_or_is_a_clear_value_error(url: Any) -> None:
    try:
        storage = open_storage(url)
    except ValueError as exc:
        message = str(exc)
        assert message and "Traceback" not in message
        assert any(hint in message for hint in ("://", "write", "use", "install", "known")), \
            message
        assert not carries_secret(url) or SECRET_WORD not in message, message
        return
    assert isinstance(storage, BaseStorage)
    if carries_secret(url):
        assert SECRET_WORD not in repr(storage) and SECRET_WORD not in str(storage)
        assert SECRET_WORD not in storage.get_root_path()


def carries_secret(url: object) -> bool:
    """Whether the secret word sits *only* where a URL keeps a credential:
    the userinfo before '@', or a password/key query parameter."""
    if not isinstance(url, str) or "://" not in url:
        return False
    rest = url.split("://", 1)[1]
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    hidden = netloc.rsplit("@", 1)[0].count(SECRET_WORD) if "@" in netloc else 0
    query = rest.split("?", 1)[1].split("#", 1)[0] if "?" in rest else ""
    hidden += sum(value.count(SECRET_WORD) for name, values in parse_qs(query).items()
                  if name in ("password", "aws_secret_access_key") for value in values)
    return 0 < hidden == url.count(SECRET_WORD)
