"""Functions whose names differ only in non-ASCII letters or accents."""

from __future__ import annotations


def 計算(x: int) -> int:
    return x + 1


def 処理(x: int) -> int:
    return x + 2


def café(x: int) -> int:
    return x + 3


def cafè(x: int) -> int:
    return x + 4
