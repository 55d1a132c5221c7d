"""``Call``: one call of a cached function or ``%%cache`` cell, as the
protocol and the transfer of entries see it.

``@cached`` and ``%%cache`` build a ``Call``; ``protocol`` drives it through
acquire-or-wait; ``transfer`` loads and stores its entry.  It lives apart
from both so that neither has to import the other, and it carries the
function's ``CacheOptions`` whole rather than a copy of each option.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import BaseStorage
from .names import lock_name_for
from .options import CacheOptions
from .report import Reporter

__all__ = ["Call"]


@dataclass(kw_only=True)
class Call:
    """Everything the protocol needs to know about one call.

    Examples:
        >>> import tempfile
        >>> from labcache import LocalStorage
        >>> call = Call(storage=LocalStorage(tempfile.mkdtemp()), context="demo.f",
        ...             key="ab12", function="demo.f", options=CacheOptions(ttl=60),
        ...             metadata=dict, reporter=Reporter("demo.f"))
        >>> call.lock_name, call.options.ttl
        ('demo.f.ab12', 60)
    """

    storage: BaseStorage
    context: str
    key: str
    function: str
    options: CacheOptions
    metadata: Callable[[], dict[str, Any]]  # built only when an entry is stored
    reporter: Reporter
    force: bool = False
    looked: bool = False  # the caller already found no entry
    on_stale: Callable[[], object] | None = None  # a hit older than stale_after calls it
    computed: bool = False
    stored: bool = False  # this call stored a new entry (see protocol._finished)
    value: Any = None
    started: float = field(default_factory=time.time)

    @property
    def lock_name(self) -> str:
        return lock_name_for(self.context, self.key)
