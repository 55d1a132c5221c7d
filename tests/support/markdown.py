"""The fenced code blocks of the docs pages, for the tests that run them."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_ILLUSTRATION = re.compile(r'\btitle="Illustration', re.IGNORECASE)


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    info: str
    code: str

    @property
    def runnable(self) -> bool:
        words = self.info.split()
        return bool(words) and words[0] == "python" and not _ILLUSTRATION.search(self.info)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def fenced_blocks(page: Path) -> Iterator[Block]:
    """The fenced code blocks of one Markdown page, indented ones included."""
    lines = page.read_text(encoding="utf-8").splitlines()
    opened: tuple[int, str, str, str] | None = None  # line, indent, fence, info
    body: list[str] = []
    for number, line in enumerate(lines, start=1):
        if opened is None:
            match = _FENCE.match(line)
            if match:
                opened = (number, match["indent"], match["fence"], match["info"].strip())
                body = []
            continue
        start, indent, fence, info = opened
        if line.strip() == fence and line.startswith(indent):
            code = textwrap.dedent("\n".join(body)) + "\n"
            yield Block(page.name, start, info, code)
            opened = None
        else:
            body.append(line)
    assert opened is None, f"{page.name}:{opened[0]}: unclosed code fence"
