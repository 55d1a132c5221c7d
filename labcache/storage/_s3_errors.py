"""What S3's errors mean to S3Storage: the answers read from them (no such
key, not modified, precondition failed), and for real failures, how they are
described and what to do (the boundary in ``_errors.py`` uses both)."""

from __future__ import annotations

from typing import Any

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as EndpointError

__all__ = ["ERRORS", "advice", "answer", "code", "describe", "missing", "not_modified", "status"]

#: What boto3 raises.  A raw OSError is a socket failing under a response
#: stream: the boundaries stand around requests and streams only, never
#: around the local copies' file operations.
ERRORS: tuple[type[BaseException], ...] = (ClientError, BotoCoreError, Boto3Error, OSError)

_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "AllAccessDisabled", "AccountProblem", "403"}
_BUSY = {"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError", "503", "500"}


def answer(exc: BaseException) -> ClientError | None:
    """S3's answer behind an error: the ClientError itself, or the one a
    boto3 upload failed with (``S3UploadFailedError`` has it as its context)."""
    found: BaseException | None = exc
    for _ in range(4):  # a short chain; never a loop
        if found is None or isinstance(found, ClientError):
            return found
        found = found.__cause__ or found.__context__
    return None


def code(exc: BaseException) -> str:
    """The error code of S3's answer (``"NoSuchKey"``, ``"404"``), or ``""``."""
    response: Any = getattr(answer(exc), "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def status(exc: BaseException) -> int | None:
    """The HTTP status of S3's answer, if there was one."""
    response: Any = getattr(answer(exc), "response", None) or {}
    found = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return found if isinstance(found, int) else None


def missing(exc: BaseException) -> bool:
    """Whether the answer says "no such key" (a HEAD's 404 carries only "404")."""
    return code(exc) in ("NoSuchKey", "NotFound", "404")


def not_modified(exc: BaseException) -> bool:
    """Whether a conditional read says the held version is still current."""
    return status(exc) == 304 or code(exc) in ("304", "NotModified")


def describe(exc: BaseException) -> str:
    """S3's answer as ``Code (HTTP status): message``; other errors as their
    type and text."""
    found = answer(exc)
    if found is None:
        return f"{type(exc).__name__}: {exc}"
    message = found.response.get("Error", {}).get("Message", "")
    return f"{code(found) or '?'} (HTTP {status(found) or '?'}): {message}".strip()


def advice(exc: BaseException) -> str:
    """What to do about a failed S3 request, in words.

    Examples:
        >>> from botocore.exceptions import EndpointConnectionError
        >>> advice(EndpointConnectionError(endpoint_url="http://s3.lab"))
        'Check that the endpoint is running and reachable from this machine'
    """
    found = code(exc)
    if found in _DENIED:
        return ("Check the credentials (AWS_* variables, a profile, or the storage's "
                "options) and that they may read and write this bucket")
    if found == "NoSuchBucket":
        return "Check the bucket name in the storage URL; labcache never creates buckets"
    if found in _BUSY:
        return "The service is busy or failing; try again in a moment"
    if isinstance(exc, NoCredentialsError):
        return ("Give credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, "
                "or the storage's options")
    if isinstance(exc, (EndpointError, HTTPClientError, OSError)):
        return "Check that the endpoint is running and reachable from this machine"
    return "Check the endpoint, the bucket and the credentials"
