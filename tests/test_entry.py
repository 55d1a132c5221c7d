"""The entry format: round trips, layout, corruption, signing, unpicklable values."""

from __future__ import annotations

import io
import json
import os
import random
import struct
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import labcache
from labcache.entry import FORMAT_VERSION, MAGIC, decode, encode, read_header
from labcache.errors import CorruptEntryError, SignatureError, UnpicklableResultError

META = {"function": "demo.f", "args": "x=1"}


# -- helpers ---------------------------------------------------------------------------------


def entry_bytes(value: object, meta: dict[str, Any] | None = None) -> bytes:
    return bytes(encode(value, META if meta is None else meta))


PREFIX = struct.Struct("<4sHHII16sI28s")  # magic, format, flags, parts, header length,
#                                         checksum, seal length, reserved: the documented 64 bytes


def layout(data: bytes) -> tuple[dict[str, Any], int, list[tuple[int, int]]]:
    """(header, offset of the HMAC, [(start, size) of every part]) of an entry.

    Computed independently from the documented layout: a 64-byte prefix, the
    seal (its HMAC last), a binary header (created, compute seconds, key,
    part sizes, JSON metadata), the pickle, then each buffer on a 64-byte
    boundary.
    """
    magic, version, flags, count, length, digest, sealed, _ = PREFIX.unpack_from(data)
    assert magic == MAGIC
    at = 64 + sealed
    key_length = struct.unpack_from("<ddH", data, at)[2]
    sizes_at = at + 18 + key_length
    sizes = list(struct.unpack_from(f"<{count}Q", data, sizes_at))
    meta = json.loads(data[sizes_at + 8 * count : at + length])
    header = {"format": version, "signed": bool(flags & 1), "sizes": sizes,
              "checksum": digest.hex(), "meta": meta}
    offset = at + length
    parts = []
    for index, size in enumerate(sizes):
        if index:
            offset += -offset % 64
        parts.append((offset, size))
        offset += size
    assert offset == len(data)
    assert xxhash.xxh3_128(data[at:]).digest() == digest
    return header, at - 32, parts


def build(header: dict[str, Any], parts: list[bytes], signature: bytes = bytes(28)) -> bytes:
    """Assemble an entry by hand (for entries encode() would never write).

    ``header`` gives ``format``, ``sizes``, ``meta`` (or ``raw_meta`` bytes) and
    optionally ``signed`` and ``checksum`` (computed over what follows the
    prefix when left out).
    """
    meta = header.get("raw_meta") or json.dumps(header.get("meta", {})).encode()
    sizes = header["sizes"]
    head = (struct.pack("<ddH", 0.0, 0.0, 0) + struct.pack(f"<{len(sizes)}Q", *sizes) + meta)
    body = bytearray(head)
    for index, part in enumerate(parts):
        if index:
            body += bytes(-(64 + len(body)) % 64)
        body += part
    digest = (bytes.fromhex(header["checksum"]) if "checksum" in header
              else xxhash.xxh3_128(bytes(body)).digest())
    prefix = PREFIX.pack(MAGIC, header["format"], int(header.get("signed", False)), len(sizes),
                         len(head), digest, 0, signature)
    return prefix + bytes(body)


def rechecksum(data: bytes) -> bytes:
    """The entry with its checksum recomputed (what a forger would do)."""
    at = 64 + struct.unpack_from("<I", data, 32)[0]
    return data[:16] + xxhash.xxh3_128(data[at:]).digest() + data[32:]


def checksum(*parts: bytes) -> str:
    digest = xxhash.xxh3_128()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def flip(data: bytes, position: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 1 << bit
    return bytes(changed)


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1
    return data.replace(old, new)


class MakesDirectoryWhenLoaded:
    """Pickles as a call to ``os.mkdir(marker)``: loading it runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None, 0, -(2**70), 3.25, "text ü", b"raw bytes", bytearray(b"mutable"),
        [1, [2, [3]]], (1, "a"), {"a": {"b": [1, 2, {"c": None}]}, "d": (1.5, "x")},
        {1, 2, 3}, frozenset({"x"}),
    ],
    ids=lambda v: type(v).__name__,
)
def test_round_trip_plain_values(value: object) -> None:
    decoded, header = decode(entry_bytes(value))
    assert decoded == value
    assert type(decoded) is type(value)
    assert header.meta == META
    assert header.format == FORMAT_VERSION


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.linspace(0, 1, 7, dtype=np.float32),
        np.asfortranarray(np.arange(20.0).reshape(4, 5)),
        np.arange(40, dtype=np.int16).reshape(5, 8)[::2, 1::3],  # not contiguous
        np.array([], dtype=np.complex128),
        np.array(7, dtype=np.uint8),
        np.array(["a", "bc"]),
        np.array([{"k": 1}, None], dtype=object),
        np.zeros(3, dtype=[("x", "<f8"), ("y", "<i4")]),
    ],
    ids=["int32", "float32", "fortran", "strided", "empty", "0d", "str", "object", "record"],
)
def test_round_trip_arrays(array: np.ndarray) -> None:
    decoded, _ = decode(entry_bytes({"a": array}))
    result = decoded["a"]
    assert isinstance(result, np.ndarray)
    assert result.dtype == array.dtype
    assert result.shape == array.shape
    assert np.array_equal(result, array) if array.dtype != object else list(result) == list(array)
    assert result.flags.writeable
    if result.size:
        result.flat[0] = result.flat[-1]  # really writable, no error


def test_large_array_travels_out_of_band_and_aligned() -> None:
    array = np.arange(10 * 2**20 // 8, dtype=np.float64)  # 10 MB
    encoded = encode(array, META)
    data = bytes(encoded)
    header, _, parts = layout(data)
    assert header["sizes"] == list(encoded.header.sizes)
    assert len(header["sizes"]) > 1
    assert encoded.size == len(data)
    start, size = max(parts[1:], key=lambda part: part[1])
    assert size == array.nbytes
    assert start % 64 == 0
    assert data[start : start + size] == array.tobytes()  # stored raw, not pickled
    assert len(data) < array.nbytes + 64 * 1024  # and stored once
    decoded, _ = decode(data)
    assert decoded.dtype == np.float64
    assert np.array_equal(decoded, array)
    assert decoded.flags.writeable


def test_every_buffer_starts_on_a_64_byte_boundary() -> None:
    arrays = [np.arange(n, dtype=np.uint8) for n in (1, 63, 65, 1000)]
    data = entry_bytes(arrays, {"function": "x" * 13})  # an odd-sized header
    _, _, parts = layout(data)
    assert len(parts) == 1 + len(arrays)
    for (start, size), array in zip(parts[1:], arrays, strict=True):
        assert start % 64 == 0
        assert data[start : start + size] == array.tobytes()
    decoded, _ = decode(data)
    for got, want in zip(decoded, arrays, strict=True):
        assert np.array_equal(got, want)


def test_round_trip_pandas_dataframe() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({
        "a": np.arange(1000),
        "b": np.linspace(0, 1, 1000),
        "c": ["x", "y"] * 500,
        "d": pd.date_range("2024-01-01", periods=1000, freq="h"),
    }).set_index("c")
    decoded, _ = decode(entry_bytes(frame))
    pd.testing.assert_frame_equal(decoded, frame)


def test_encoded_chunks_read_and_bytes_agree() -> None:
    encoded = encode({"a": np.arange(100)}, META)
    joined = bytes(encoded)
    assert b"".join(bytes(chunk) for chunk in encoded.iter_chunks()) == joined
    assert encoded.read() == joined  # for storages that only know file objects
    assert encoded.read() == b""


def test_decode_from_bytes_and_from_files_agree(tmp_path: Path) -> None:
    value = {"a": np.arange(1000, dtype=np.int64), "b": [1, "two"]}
    data = entry_bytes(value)
    from_bytes, header_b = decode(data)
    from_memoryview, _ = decode(memoryview(data))
    from_stream, header_s = decode(io.BytesIO(data))
    path = tmp_path / "entry"
    path.write_bytes(data)
    with open(path, "rb") as f:
        from_file, header_f = decode(f)
    with open(path, "rb", buffering=0) as f:
        from_raw_file, _ = decode(f)
    assert header_b == header_s == header_f
    for got in (from_memoryview, from_stream, from_file, from_raw_file):
        assert got["b"] == from_bytes["b"] == value["b"]
        assert np.array_equal(got["a"], from_bytes["a"])
        assert got["a"].dtype == np.int64
        assert got["a"].flags.writeable


def test_read_header_does_not_unpickle(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = entry_bytes(MakesDirectoryWhenLoaded(marker), {"function": "evil"})
    header = read_header(data)
    assert header.meta == {"function": "evil"}
    assert header.format == FORMAT_VERSION
    assert read_header(io.BytesIO(data)) == header
    assert not marker.exists()


# -- corruption ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> bytes:
    return entry_bytes({"a": np.arange(500, dtype=np.int32), "b": "text" * 50})


def test_truncation_anywhere_is_corrupt(sample: bytes) -> None:
    _, _, parts = layout(sample)
    ends = {start + size for start, size in parts}
    cuts = set(range(200)) | {start + 1 for start, _ in parts} | {end - 1 for end in ends}
    cuts |= {len(sample) // 2, len(sample) - 1}
    assert max(cuts) < len(sample)
    for cut in sorted(cuts):
        with pytest.raises(CorruptEntryError):
            decode(sample[:cut])
    for cut in (0, 7, 100, len(sample) // 2, len(sample) - 1):
        with pytest.raises(CorruptEntryError):
            decode(io.BytesIO(sample[:cut]))


def test_single_bit_flips_in_the_payload_are_corrupt(sample: bytes) -> None:
    _, _, parts = layout(sample)
    positions = [start + offset for start, size in parts for offset in range(size)]
    rng = random.Random(20240601)
    chosen = rng.sample(positions, 50)
    chosen += [parts[0][0], parts[-1][0] + parts[-1][1] - 1]  # first and last payload byte
    for position in chosen:
        with pytest.raises(CorruptEntryError, match="checksum"):
            decode(flip(sample, position, rng.randrange(8)))


def test_bad_magic(sample: bytes) -> None:
    with pytest.raises(CorruptEntryError, match="magic"):
        decode(b"XXXX" + sample[4:])
    with pytest.raises(CorruptEntryError):
        decode(b"PK\x03\x04" + bytes(100))


def test_other_format_version(sample: bytes) -> None:
    changed = sample[:4] + struct.pack("<H", 7) + sample[6:]
    with pytest.raises(CorruptEntryError) as caught:
        decode(changed)
    message = str(caught.value)
    assert "7" in message and "version" in message
    with pytest.raises(CorruptEntryError):
        read_header(changed)


@pytest.mark.parametrize("extra", [b"\x00", b"more", bytes(64)])
def test_trailing_bytes(sample: bytes, extra: bytes) -> None:
    with pytest.raises(CorruptEntryError, match="trailing"):
        decode(sample + extra)
    with pytest.raises(CorruptEntryError, match="trailing"):
        decode(io.BytesIO(sample + extra))


@pytest.mark.parametrize(
    ("count", "head"),
    [(1, b""), (1, b"\x00" * 17), (2, struct.pack("<ddH", 0, 0, 0) + bytes(8)),
     (1, struct.pack("<ddH", 0, 0, 40) + bytes(8)), (0, struct.pack("<ddH", 0, 0, 0)),
     (1, struct.pack("<ddH", 0, 0, 2) + b"\xff\xfe" + bytes(8))],
    ids=["empty", "short-fixed", "short-sizes", "key-past-end", "no-parts", "key-not-utf8"],
)
def test_bad_headers(count: int, head: bytes) -> None:
    data = PREFIX.pack(MAGIC, FORMAT_VERSION, 0, count, len(head), bytes(16), 0, bytes(28))
    data += head + b"x"
    with pytest.raises(CorruptEntryError):
        decode(data)
    with pytest.raises(CorruptEntryError):
        read_header(data)


def test_bad_metadata_json_fails_listing_not_silently() -> None:
    data = build({"format": FORMAT_VERSION, "sizes": [1], "raw_meta": b"{]"}, [b"N"])
    with pytest.raises(CorruptEntryError, match="metadata"):
        read_header(data)


def test_implausible_header_length() -> None:
    with pytest.raises(CorruptEntryError):
        decode(PREFIX.pack(MAGIC, FORMAT_VERSION, 0, 1, 2**31, bytes(16), 0, bytes(28)) + b"{}")
    with pytest.raises(CorruptEntryError):
        decode(PREFIX.pack(MAGIC, FORMAT_VERSION, 0, 2**31, 64, bytes(16), 0, bytes(28)) + b"{}")


def test_entry_of_the_older_format_is_a_clear_miss() -> None:
    with pytest.raises(CorruptEntryError, match="older labcache"):
        decode(b"LCE1" + bytes(100))


def test_payload_that_does_not_unpickle_is_corrupt() -> None:
    payload = b"this is not a pickle"
    header = {"format": FORMAT_VERSION, "sizes": [len(payload)], "meta": {}}
    with pytest.raises(CorruptEntryError, match="unpickle"):
        decode(build(header, [payload]))


def test_hand_built_entry_matches_the_documented_layout() -> None:
    # Guards the helpers above: a hand-built valid entry decodes.
    import pickle

    array = np.arange(10, dtype=np.int64)
    buffers: list[pickle.PickleBuffer] = []
    pickled = pickle.dumps(array, protocol=5, buffer_callback=buffers.append)
    raw = [bytes(b.raw()) for b in buffers]
    header = {"format": FORMAT_VERSION, "sizes": [len(pickled)] + [len(b) for b in raw],
              "meta": {}}
    decoded, _ = decode(build(header, [pickled, *raw]))
    assert np.array_equal(decoded, array)


@pytest.mark.parametrize("sizes", [[1, 2**62], [2**62]], ids=["buffer", "pickle"])
@pytest.mark.parametrize("source", ["bytes", "file"])
def test_absurd_part_size_in_header_is_corrupt_not_a_crash(
    sizes: list[int], source: str, tmp_path: Path
) -> None:
    """The header is read before the checksum and the signature are checked,
    so a damaged or hostile header must still end in CorruptEntryError, not
    in allocating whatever size it claims."""
    header = {"format": FORMAT_VERSION, "sizes": sizes, "checksum": "0" * 32,
              "signed": False, "meta": {}}
    data = build(header, [b"\x80"]) + bytes(100)
    if source == "bytes":
        with pytest.raises(CorruptEntryError):
            decode(data)
    else:
        path = tmp_path / "entry"
        path.write_bytes(data)
        with open(path, "rb") as f, pytest.raises(CorruptEntryError):
            decode(f)


def test_deeply_nested_metadata_is_corrupt_not_a_crash() -> None:
    import pickle

    data = build({"format": FORMAT_VERSION, "sizes": [len(pickle.dumps(None))],
                  "raw_meta": b"[" * 100_000}, [pickle.dumps(None)])
    with pytest.raises(CorruptEntryError):
        read_header(data)
    value, _ = labcache.entry.load(data)  # a hit never parses the metadata
    assert value is None


# -- signing ---------------------------------------------------------------------------------


def test_signed_entry_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCACHE_SECRET", "team secret")
    data = entry_bytes({"a": np.arange(10)})
    header, signature_at, _ = layout(data)
    assert header["signed"] is True
    assert data[signature_at : signature_at + 32] != bytes(32)
    decoded, _ = decode(data)
    assert np.array_equal(decoded["a"], np.arange(10))
    assert decode(data, verify_key=b"team secret")[0]["a"].tolist() == list(range(10))


def test_unsigned_entry_refused_when_secret_set(monkeypatch: pytest.MonkeyPatch) -> None:
    data = entry_bytes([1, 2, 3])
    assert read_header(data).signed is False
    assert decode(data)[0] == [1, 2, 3]
    monkeypatch.setenv("LABCACHE_SECRET", "team secret")
    with pytest.raises(SignatureError):
        decode(data)
    assert issubclass(SignatureError, CorruptEntryError)


def test_entry_signed_with_another_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCACHE_SECRET", "their secret")
    data = entry_bytes([1, 2, 3])
    monkeypatch.setenv("LABCACHE_SECRET", "our secret")
    with pytest.raises(SignatureError):
        decode(data)


def test_unsigned_entry_claiming_to_be_signed_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = entry_bytes([1, 2, 3])
    seal = bytes([1, 0]) + bytes(range(32))  # sha256, no signer name, a made-up HMAC
    forged = (data[:6] + struct.pack("<H", 1) + data[8:32] + struct.pack("<I", len(seal))
              + data[36:64] + seal + data[64:])  # the "signed" flag and a seal added
    header, signature_at, _ = layout(forged)
    assert header["signed"] is True and forged[signature_at:signature_at + 32] == seal[2:]
    monkeypatch.setenv("LABCACHE_SECRET", "team secret")
    with pytest.raises(SignatureError):
        decode(forged)


def test_meta_altered_after_signing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCACHE_SECRET", "team secret")
    data = entry_bytes(42, {"function": "demo.f", "user": "alice"})
    altered = replace_once(data, b'"alice"', b'"mallo"')
    with pytest.raises(CorruptEntryError, match="checksum"):
        decode(altered)  # the checksum covers the metadata too
    forged = rechecksum(altered)  # the checksum is no secret: a forger recomputes it
    assert read_header(forged).meta["user"] == "mallo"
    with pytest.raises(SignatureError):
        decode(forged)


def test_signature_bit_flip_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCACHE_SECRET", "team secret")
    data = entry_bytes(42)
    _, signature_at, _ = layout(data)
    for position in (signature_at, signature_at + 17, signature_at + 31):
        with pytest.raises(SignatureError):
            decode(flip(data, position, 3))


def test_malicious_entry_is_never_unpickled_under_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a pickle runs code: whoever can write to a shared storage can
    run code in every reader.  With LABCACHE_SECRET set, an entry that was
    not signed with it is refused *before* unpickling; this is why teams
    sharing a storage should set a secret."""
    marker = tmp_path / "code-ran"
    data = entry_bytes(MakesDirectoryWhenLoaded(marker), {"function": "innocent"})
    assert not marker.exists()  # encoding did not run it either
    monkeypatch.setenv("LABCACHE_SECRET", "team secret")
    with pytest.raises(SignatureError):
        decode(data)
    with pytest.raises(SignatureError):
        decode(io.BytesIO(data))
    assert not marker.exists()
    # Without a secret the very same (valid, checksummed) entry loads and runs code:
    monkeypatch.delenv("LABCACHE_SECRET")
    value, _ = decode(data)
    assert value is None  # what os.mkdir returned
    assert marker.is_dir()


# -- values that cannot be stored ------------------------------------------------------------


def _generator() -> Any:
    yield 1


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(threading.Lock(), "lock"), (_generator(), "generator"),
     ({"inner": threading.Lock()}, "lock")],
    ids=["lock", "generator", "nested-lock"],
)
def test_unpicklable_values(value: object, type_name: str) -> None:
    with pytest.raises(UnpicklableResultError) as caught:
        encode(value, META)
    assert isinstance(caught.value, TypeError)
    assert isinstance(caught.value, labcache.LabcacheError)
    assert type_name in str(caught.value)


# -- random input ----------------------------------------------------------------------------


def _with_magic(rest: bytes) -> bytes:
    return MAGIC + rest


def _with_header(head: bytes, rest: bytes) -> bytes:
    count = 1 + len(rest) % 3
    return PREFIX.pack(MAGIC, FORMAT_VERSION, 0, count, len(head), bytes(16), 0, bytes(28)) \
        + head + rest


random_entries = st.one_of(
    st.binary(max_size=2048),
    st.binary(max_size=512).map(_with_magic),
    st.builds(_with_header, st.binary(max_size=256), st.binary(max_size=256)),
    st.builds(_with_header, st.text(max_size=200).map(str.encode), st.binary(max_size=256)),
)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=random_entries)
def test_random_bytes_never_decode(data: bytes) -> None:
    with pytest.raises(CorruptEntryError):
        decode(data)
    with pytest.raises(CorruptEntryError):
        decode(io.BytesIO(data))
