"""Incomplete multipart uploads: what an S3 store killed midway leaves.

boto3 aborts the upload itself when a store fails with an exception; a
process that is killed (or loses its machine) leaves the parts already sent,
invisible in listings and billed, until someone aborts the upload.  Its age
is the time since its last part (or since it started, if it has none), by
the server's clock (the ``Date`` of the listing), so an upload still sending
parts is always young however big it is.  The bucket's lifecycle rule
``AbortIncompleteMultipartUpload`` is the second safety net (docs/storages.md).
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from ..base import Orphan
from ._s3_errors import code
from ._s3_streams import http_date

__all__ = ["find", "remove"]


def find(storage: Any) -> list[Orphan]:
    """Every incomplete multipart upload under the storage's prefix (the
    whole bucket when it has none)."""
    bucket = storage.bucket
    with storage._errors("list_multipart_uploads s3://{}/{}", bucket, storage._base):
        client = storage._s3()
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=bucket, Prefix=storage._base)
        uploads = [upload for page in pages for upload in page.get("Uploads", ())]
        found = (_describe(client, bucket, u["Key"], u["UploadId"], u.get("Initiated"))
                 for u in uploads)
        return [orphan for orphan in found if orphan is not None]


def remove(storage: Any, orphan: Orphan, older_than: float) -> bool:
    """Abort the upload if it is still there and has sent no part since
    ``older_than`` seconds."""
    bucket = storage.bucket
    key, upload_id, initiated = orphan.handle
    with storage._errors("abort_multipart_upload s3://{}/{}", bucket, key):
        client = storage._s3()
        now = _describe(client, bucket, key, upload_id, initiated)
        if now is None or now.age is None or now.age < older_than:
            return False
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if not _no_such_upload(exc):
                raise
            return False  # completed or aborted meanwhile
    return True


def _describe(client: Any, bucket: str, key: str, upload_id: str,
              initiated: Any) -> Orphan | None:
    """The upload's size and idle time from its parts; None once it is gone."""
    size, last, server_now = 0, initiated.timestamp() if initiated else None, None
    try:
        pages = client.get_paginator("list_parts").paginate(
            Bucket=bucket, Key=key, UploadId=upload_id)
        for page in pages:
            server_now = server_now or _server_time(page)
            for part in page.get("Parts", ()):
                size += int(part.get("Size", 0))
                sent = part["LastModified"].timestamp() if part.get("LastModified") else None
                if sent is not None:
                    last = sent if last is None else max(last, sent)
    except ClientError as exc:
        if _no_such_upload(exc):
            return None
        raise
    age = None if last is None else max((server_now or time.time()) - last, 0.0)
    return Orphan("multipart upload", f"s3://{bucket}/{key} (upload {upload_id[:16]})", size,
                  age, (key, upload_id, initiated))


def _server_time(response: dict[str, Any]) -> float | None:
    """The server's clock from a response's ``Date`` header, if it has one."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return http_date(date) if date else None
    except (TypeError, ValueError):
        return None


def _no_such_upload(exc: ClientError) -> bool:
    return code(exc) in ("NoSuchUpload", "404")
