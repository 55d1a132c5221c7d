"""Every runnable Python example in ``docs/*.md`` runs.

Each fenced block opened with ```` ```python ```` is run on its own, in a fresh
namespace named ``__main__`` (as in a notebook or a script), with the working
directory and ``LABCACHE_DIR`` set to a private temp folder.

A block that only illustrates (a path such as ``/shared/team``, ``...``
bodies) says so in its title, which readers see above the code::

    ```python title="Illustration: a team folder"

and is skipped here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .support.markdown import DOCS, Block, fenced_blocks


def _all_blocks() -> list[Block]:
    return [block for page in sorted(DOCS.glob("*.md")) for block in fenced_blocks(page)]


RUNNABLE = [block for block in _all_blocks() if block.runnable]


@pytest.mark.parametrize("block", RUNNABLE, ids=[block.id for block in RUNNABLE])
def test_example_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABCACHE_DIR", str(tmp_path / "default-cache"))
    saved_environ = dict(os.environ)
    # A real file, so that inspect.getsource (and so the cache key) sees the
    # example's functions as it would in a script.
    source = tmp_path / f"example_{block.page.removesuffix('.md')}_{block.line}.py"
    source.write_text(block.code, encoding="utf-8")
    try:
        exec(compile(block.code, str(source), "exec"), {"__name__": "__main__"})
    finally:  # an example may set LABCACHE_SECRET and the like
        os.environ.clear()
        os.environ.update(saved_environ)


def test_the_key_examples_stay_runnable() -> None:
    """The first cached function and the custom-storage examples must not
    quietly become illustrations."""
    pages = [(block.page, block.code) for block in RUNNABLE]
    assert any(page == "index.md" and "@cached" in code for page, code in pages)
    for base in ("(BaseLockingStorage)", "(RecordLockingStorage)"):
        assert any(page == "storages.md" and base in code for page, code in pages), base


def test_fences_are_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n"
        "```python\nx = 1\n```\n"
        '!!! note\n    ```python title="Illustration"\n    y = ...\n    ```\n'
        "````markdown\n```python\nnot a block of its own\n```\n````\n",
        encoding="utf-8",
    )
    blocks = list(fenced_blocks(page))
    assert [(b.line, b.runnable, b.code) for b in blocks] == [
        (2, True, "x = 1\n"),
        (6, False, "y = ...\n"),
        (9, False, "```python\nnot a block of its own\n```\n"),
    ]


def test_the_options_table_names_every_option_with_its_default() -> None:
    from dataclasses import fields

    from labcache.options import CacheOptions

    text = (DOCS / "index.md").read_text()
    section = text[text.index("## Options of `@cached`"):]
    table = section[:section.index("\n## ")]
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", table, re.MULTILINE))
    assert rows == {f.name: repr(f.default).replace("'", '"') for f in fields(CacheOptions)}

