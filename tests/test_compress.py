"""Compression on the wire to Redis and S3 (``compress=``), on real servers:
stored sizes are read from the server itself."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labcache import entry
from labcache._compress import BLOCK, frame_chunks, open_frame, unframe_head

pd = pytest.importorskip("pandas")


def repetitive_frame(rows: int = 200_000) -> Any:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "city": rng.choice(["Berlin", "Paris", "Madrid", "Lisbon"], rows),
        "kind": pd.Categorical(rng.choice(["a", "b", "c"], rows)),
        "count": rng.integers(0, 50, rows),
        "label": [f"item-{i % 100}" for i in range(rows)],
    })


def random_floats(count: int = 1_000_000) -> Any:
    return np.random.default_rng(1).random(count)


@pytest.fixture(params=["redis", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Any]:
    """(kind, a function making a storage on this test's server with options)."""
    if request.param == "redis":
        from labcache import RedisStorage

        url = request.getfixturevalue("redis_server").url
        return "redis", lambda **options: RedisStorage(url, prefix="z", **options)
    from labcache import S3Storage

    from .support.services_s3 import CREDENTIALS, moto_endpoint, require_s3

    require_s3()
    url = request.getfixturevalue("s3_url")
    return "s3", lambda **options: S3Storage(url, endpoint_url=moto_endpoint(), **CREDENTIALS,
                                             **options)


def stored_size(storage: Any, name: str, context: str) -> int:
    """Bytes the server holds for an entry, asked of the server itself."""
    if hasattr(storage, "bucket"):
        from .support.services_s3 import raw_client

        key = f"{storage.prefix}/{context}/{name}"
        return int(raw_client().head_object(Bucket=storage.bucket, Key=key)["ContentLength"])
    client, key = storage.client, storage._entry_key(name, context)
    value = client.get(key)
    if value[:1] == b"I":
        return len(value) - 1
    return sum(client.strlen(chunk) for chunk in storage._chunk_keys(value))


def test_a_repetitive_dataframe_shrinks_many_times(backend: tuple[str, Any]) -> None:
    storage = backend[1]()
    frame = repetitive_frame()
    encoded = entry.encode(frame, {"function": "f"})
    storage.upload_file(encoded, "df", "ctx")
    assert stored_size(storage, "df", "ctx") * 5 < encoded.size
    with storage.get_file_by_hashcode("df", "ctx") as source:
        value, _ = entry.decode(source)
    pd.testing.assert_frame_equal(value, frame)
    assert storage.read_entry_header("df", "ctx").meta == {"function": "f"}


def test_random_floats_are_sent_as_they_are(backend: tuple[str, Any]) -> None:
    storage = backend[1]()
    floats = random_floats()
    encoded = entry.encode(floats, {"function": "f"})
    storage.upload_file(encoded, "floats", "ctx")
    size = stored_size(storage, "floats", "ctx")
    blocks = encoded.size // BLOCK + 2
    assert encoded.size <= size <= encoded.size + 16 + 12 * blocks  # frame headers only
    assert np.array_equal(entry.decode(storage.download_file("floats", "ctx"))[0], floats)


def test_compress_false_stores_the_entry_itself(backend: tuple[str, Any]) -> None:
    storage = backend[1](compress=False)
    encoded = entry.encode(repetitive_frame(), {"function": "f"})
    storage.upload_file(encoded, "df", "ctx")
    assert stored_size(storage, "df", "ctx") == encoded.size


def test_readers_take_both_compressed_and_raw_entries(backend: tuple[str, Any]) -> None:
    packing, plain = backend[1](compress=True), backend[1](compress=False)
    frame = repetitive_frame(50_000)
    packing.upload_file(entry.encode(frame, {}), "packed", "ctx")
    plain.upload_file(entry.encode(frame, {}), "raw", "ctx")
    for reader in (packing, plain):
        for name in ("packed", "raw"):
            pd.testing.assert_frame_equal(entry.decode(reader.download_file(name, "ctx"))[0],
                                          frame)


def test_a_mixed_entry_compresses_only_the_blocks_that_pay() -> None:
    value = {"floats": random_floats(2_000_000), "text": ["same words"] * 2_000_000}
    encoded = entry.encode(value, {})
    framed = b"".join(frame_chunks(encoded, True))
    floats_bytes = value["floats"].nbytes
    assert floats_bytes < len(framed) < encoded.size * 0.95
    assert open_frame(io.BytesIO(framed)).read() == bytes(encoded)


def test_small_entries_and_plain_bytes_go_as_they_are() -> None:
    small = entry.encode(list(range(100)), {})
    assert b"".join(frame_chunks(small, "auto")) == bytes(small)
    data = b"x" * (1 << 20)  # not an entry: only compress=True packs it
    assert b"".join(frame_chunks(data, "auto")) == data
    assert len(b"".join(frame_chunks(data, True))) < len(data) // 10


def test_a_damaged_frame_reads_as_a_truncated_entry() -> None:
    encoded = entry.encode(repetitive_frame(50_000), {})
    framed = bytearray(b"".join(frame_chunks(encoded, True)))
    framed[-100] ^= 0xFF
    from labcache.errors import CorruptEntryError

    with pytest.raises(CorruptEntryError):
        entry.decode(open_frame(io.BytesIO(bytes(framed))))
    assert unframe_head(bytes(framed))[:4] == entry.MAGIC


def test_compress_true_without_the_codec_is_refused_at_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from labcache import RedisStorage, _compress

    monkeypatch.setattr(_compress, "available", lambda: False)
    with pytest.raises(ValueError, match="needs the zstandard package"):
        RedisStorage("redis://db.example:6379/0", prefix="nocodec", compress=True)
    auto = RedisStorage("redis://db.example:6379/0", prefix="nocodec")  # auto: sends raw
    small = entry.encode(repetitive_frame(50_000), {})
    assert b"".join(frame_chunks(small, auto.compress)) == bytes(small)
