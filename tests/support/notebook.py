"""A notebook namespace that cells run in, like a kernel's ``__main__``."""

from __future__ import annotations

import textwrap

from labcache import LocalStorage, cached


class Notebook:
    """One ``__main__`` namespace that cells run in, like a kernel's."""

    def __init__(self, storage: LocalStorage) -> None:
        self.ns: dict[str, object] = {"__name__": "__main__", "cached": cached,
                                      "storage": storage}

    def run(self, cell: str) -> None:
        exec(compile(textwrap.dedent(cell), "<cell>", "exec"), self.ns)

    def key(self, call: str = "f.key(3)") -> str:
        return str(eval(call, self.ns))
