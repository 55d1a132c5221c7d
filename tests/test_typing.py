"""What a type checker makes of ``@cached``: every option of ``CacheOptions``
is a keyword it accepts (``mmap_mode`` was once missing), a misspelt or
mistyped option is an error, and the decorated function keeps its return type.

The snippet is checked by mypy --strict as a user's own code would be.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
from pathlib import Path

import pytest

from labcache import cached
from labcache.options import CacheOptions

api = pytest.importorskip("mypy.api")

SNIPPET = textwrap.dedent("""\
    from labcache import LocalStorage, cached

    @cached(storage=LocalStorage("/tmp/x"), ttl=10, heartbeat_interval=None, wait_timeout=60,
            ignore="verbose", version=2, on_storage_error="raise", expires_after=5.0,
            stale_after=1, mmap_mode="r", max_size="5GB", packages=("pandas",),
            code_changes="keep")
    def every_option(x: int, verbose: bool = False) -> int:
        return x

    @cached(mmap_mode="r")
    def mapped(x: int) -> bytes:
        return bytes(x)

    @cached
    def bare(x: int) -> str:
        return str(x)

    reveal_type(every_option(1))
    reveal_type(mapped)
    reveal_type(bare)
    cached(tll=1)
    cached(ttl="10")
""")


def test_mypy_accepts_every_option_and_refuses_bad_ones(tmp_path: Path) -> None:
    check = tmp_path / "check_cached.py"
    check.write_text(SNIPPET)
    out, err, _ = api.run(["--strict", "--no-error-summary", "--cache-dir",
                           str(tmp_path / "cache"), str(check)])
    lines = SNIPPET.splitlines()
    found = []  # (the snippet's line, mypy's message about it), overload lists left out
    for line in out.splitlines():
        match = re.search(r"check_cached\.py:(\d+): (.*)", line)
        if match and not match[2].startswith(("note: Possible", "note:     def")):
            found.append((lines[int(match[1]) - 1], match[2]))
    # Message wording differs between mypy versions: compare what they name.
    assert [(source, message.split(":")[0]) for source, message in found] == [
        ("reveal_type(every_option(1))", "note"), ("reveal_type(mapped)", "note"),
        ("reveal_type(bare)", "note"), ("cached(tll=1)", "error"),
        ('cached(ttl="10")', "error")], out + err
    notes = [message for _, message in found]
    assert re.search(r'"(builtins\.)?int"', notes[0])
    assert re.search(r"CachedFunction\[(builtins\.)?bytes\]", notes[1])
    assert re.search(r"CachedFunction\[(builtins\.)?str\]", notes[2])
    assert '"tll"' in notes[3] and '"str"' in notes[4]


def test_the_runtime_signature_lists_every_option_with_its_default() -> None:
    parameters = inspect.signature(cached).parameters
    options = {f.name: f.default for f in dataclasses.fields(CacheOptions)}
    assert list(parameters) == ["func", *options]
    assert {name: parameters[name].default for name in options} == options
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in options)
