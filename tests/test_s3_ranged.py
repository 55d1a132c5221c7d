"""Big S3 objects load in parallel ranged GETs pinned to one ETag (moto server)."""

from __future__ import annotations

from typing import Any

import pytest

from labcache.errors import StorageError

from .support.services_s3 import raw_client, require_s3

require_s3()


def gets(storage: Any) -> list[str]:
    """The Range header of every GetObject this storage sends from now on."""
    seen: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(params.get("Range", ""))

    storage._s3().meta.events.register("provide-client-params.s3.GetObject", record)
    return seen


def test_a_big_object_comes_in_ranged_parts_in_order(s3_storage: Any) -> None:
    data = bytes(range(256)) * (3 * 2**20 // 256) + b"tail"
    s3_storage.upload_file(data, "big", "ctx")
    s3_storage.range_part_size = 2**20
    ranges = gets(s3_storage)
    assert s3_storage.download_file("big", "ctx") == data
    assert sorted(ranges) == sorted(f"bytes={start}-{min(start + 2**20, len(data)) - 1}"
                                    for start in range(0, len(data), 2**20))
    with s3_storage.get_file_by_hashcode("big", "ctx") as stream:
        target = bytearray(len(data))
        assert stream.readinto(target) == len(data) and bytes(target) == data


def test_an_object_replaced_while_read_fails_as_a_storage_error(s3_storage: Any) -> None:
    size = 12 * 2**20
    s3_storage.upload_file(b"a" * size, "big", "ctx")
    s3_storage.range_part_size = 2**20  # 12 parts: the last ones are asked for later
    stream = s3_storage.get_file_by_hashcode("big", "ctx")
    first = stream.read(2**20)
    raw_client().put_object(Bucket=s3_storage.bucket, Key=f"{s3_storage.prefix}/ctx/big",
                            Body=b"b" * size)
    with pytest.raises(StorageError, match="replaced while it was being read"):
        stream.read()
    stream.close()
    assert first == b"a" * 2**20
    assert s3_storage.download_file("big", "ctx") == b"b" * size  # the new one, whole


def test_small_and_empty_objects_take_one_request(s3_storage: Any) -> None:
    s3_storage.upload_file(b"", "empty", "ctx")
    s3_storage.upload_file(b"small", "small", "ctx")
    ranges = gets(s3_storage)
    assert s3_storage.download_file("small", "ctx") == b"small"
    assert len(ranges) == 1
    assert s3_storage.download_file("empty", "ctx") == b""
    with pytest.raises(FileNotFoundError):
        s3_storage.download_file("none", "ctx")
