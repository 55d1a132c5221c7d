"""Masking credentials in everything labcache shows: reprs, errors, logs, widgets.

A storage URL may carry a password (``redis://:pw@host``) or a key in its
query, and client libraries like to repeat the URL in their own error
messages.  Every text a backend shows passes through :func:`redact_url` or
:func:`scrub` first, and the ``labcache`` logger scrubs its records as a
last line of defence.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from urllib.parse import quote

__all__ = ["MASK", "install_log_filter", "redact_url", "scrub"]

MASK = "***"

# Query parameters whose values are credentials ("password", "aws_secret_access_key",
# "X-Amz-Signature", "token", ...).
_SECRET_PARAM = re.compile(r"pass|secret|token|key|cred|auth|sig", re.IGNORECASE)
# A pair as parsers read it (the value runs to the next '&'), then any pair
# nested inside a value after a stray '?': both are masked, to be safe.
# In free text a value also stops at a space.
_URL_PAIRS = (re.compile(r"(?P<name>[^&;=#]+)=(?P<value>[^&;#]*)"),
              re.compile(r"(?P<name>[^&;?=#]+)=(?P<value>[^&;?#]*)"))
_TEXT_PAIRS = (re.compile(r"(?P<name>[^&;=#\s]+)=(?P<value>[^&;#\s]*)"),
               re.compile(r"(?P<name>[^&;?=#\s]+)=(?P<value>[^&;?#\s]*)"))
# scheme://userinfo@: in a URL the userinfo runs to the last '@' of the
# authority; in free text (libraries embed URLs in messages) it stops at a space.
_SCHEME = r"(?P<scheme>(?:[A-Za-z][A-Za-z0-9+.\-]*)?://)"
_URL_USERINFO = re.compile(_SCHEME + r"(?P<userinfo>[^/?#]*)@")
_TEXT_USERINFO = re.compile(_SCHEME + r"(?P<userinfo>[^/?#\s]*)@")
# Environment variables holding credentials a message could echo.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID",
               "LABCACHE_SECRET", "REDIS_PASSWORD")
# Shorter "secrets" would mask ordinary words in messages.
_MIN_SECRET = 4


def redact_url(url: object) -> str:
    """The URL with its password and any credential-looking query value masked.

    A user name is kept when a password follows it; a lone ``userinfo@``
    (which some people use for a password) is masked whole.

    Examples:
        >>> redact_url("redis://:pw@db:6379/0")
        'redis://:***@db:6379/0'
        >>> redact_url("redis://alice:pw@db/0?ssl_cert_reqs=none&password=pw")
        'redis://alice:***@db/0?ssl_cert_reqs=none&password=***'
        >>> redact_url("file:///shared/team")
        'file:///shared/team'
    """
    text = url if isinstance(url, str) else str(url)
    return _redact(_URL_USERINFO.sub(_mask_userinfo, text), _URL_PAIRS)


def _redact(text: str, query_pairs: tuple[re.Pattern[str], ...]) -> str:
    """Mask credential-looking query values after the first '?'."""
    base, mark, rest = text.partition("?")
    if not mark:
        return text
    query, hash_mark, fragment = rest.partition("#")
    for pairs in query_pairs:
        query = pairs.sub(_mask_pair, query)
    return base + mark + query + hash_mark + fragment


def scrub(text: object, secrets: Iterable[object] = ()) -> str:
    """``text`` with URLs redacted and every known secret replaced by ``***``.

    Known secrets are the ``secrets`` given (a password, keys passed as
    arguments) and the credential variables of the environment.

    Examples:
        >>> scrub("cannot reach redis://:hunter22@db:6379 (hunter22 refused)", ["hunter22"])
        'cannot reach redis://:***@db:6379 (*** refused)'
    """
    result = _redact(_TEXT_USERINFO.sub(_mask_userinfo, str(text)), _TEXT_PAIRS)
    values = [*secrets, *(os.environ.get(name) for name in _SECRET_ENV)]
    for value in sorted({str(v) for v in values if v}, key=len, reverse=True):
        if len(value) < _MIN_SECRET:
            continue
        for form in {value, quote(value, safe="")}:
            result = result.replace(form, MASK)
    return result


class _ScrubFilter(logging.Filter):
    """Redacts each record of the logger it sits on, once, before any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: leave it to logging's own error path
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_FILTER = _ScrubFilter()


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Scrub every record of the ``labcache`` logger (idempotent).

    Examples:
        >>> install_log_filter()
        >>> _FILTER in logging.getLogger("labcache").filters
        True
    """
    target = logger or logging.getLogger("labcache")
    if _FILTER not in target.filters:
        target.addFilter(_FILTER)


def _mask_userinfo(match: re.Match[str]) -> str:
    if not match["userinfo"]:
        return match[0]
    user, colon, _password = match["userinfo"].partition(":")
    shown = f"{user}:{MASK}" if colon else MASK
    return f"{match['scheme']}{shown}@"


def _mask_pair(match: re.Match[str]) -> str:
    if _SECRET_PARAM.search(match["name"]) and match["value"]:
        return f"{match['name']}={MASK}"
    return match[0]
