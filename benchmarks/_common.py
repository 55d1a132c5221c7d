"""Timing, the result table and its JSON: what every benchmark section shares."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

#: The sizes people ask about, and the smaller ones ``--quick`` uses instead.
MB = 2**20


@dataclass
class Row:
    """One measured figure; ``ratio`` compares it with labcache's (>1: labcache wins)."""

    section: str
    case: str
    contender: str
    value: float
    unit: str
    ratio: float | None = None
    note: str = ""


@dataclass
class Report:
    """Rows in the order they were measured, printed as they come."""

    rows: list[Row] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)

    def section(self, title: str) -> None:
        print(f"\n## {title}")

    def add(self, section: str, case: str, contender: str, value: float, unit: str,
            ratio: float | None = None, note: str = "") -> Row:
        row = Row(section, case, contender, value, unit, ratio, note)
        self.rows.append(row)
        shown = f"{ratio:7.2f}x" if ratio is not None else " " * 8
        print(f"  {case:28s} {contender:26s} {_human(value, unit):>14s} {shown}  {note}")
        return row

    def target(self, name: str, measured: float, wanted: str, met: bool) -> None:
        self.targets.append({"target": name, "measured": measured, "wanted": wanted, "met": met})

    def print_targets(self) -> None:
        print("\n## Targets (issue 5)")
        for t in self.targets:
            mark = "met " if t["met"] else "MISS"
            print(f"  [{mark}] {t['target']:58s} {t['measured']:10.3f}  (wanted {t['wanted']})")

    def write_json(self, path: str, environment: dict[str, Any]) -> None:
        with open(path, "w") as f:
            json.dump({"environment": environment, "rows": [asdict(r) for r in self.rows],
                       "targets": self.targets}, f, indent=1)


    def write_markdown(self, path: str, environment: dict[str, Any]) -> None:
        """The same figures as Markdown tables, one per section (for the docs)."""
        versions = ", ".join(f"{k} {v}" for k, v in environment["versions"].items() if v)
        lines = [f"Measured {environment['date']} on {environment['cpus']} cores, Python "
                 f"{environment['python']}; {versions}.", ""]
        section = None
        for row in self.rows:
            if row.section != section:
                section = row.section
                lines += ["", f"**{section}**", "", "| case | contender | value | ratio | note |",
                          "|---|---|---:|---:|---|"]
            ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
            lines.append(f"| {row.case} | {row.contender} | {_human(row.value, row.unit)} | "
                         f"{ratio} | {row.note} |")
        lines += ["", "**targets**", "", "| target | measured | wanted | met |",
                  "|---|---:|---|---|"]
        for t in self.targets:
            lines.append(f"| {t['target']} | {t['measured']:.3f} | {t['wanted']} | "
                         f"{'yes' if t['met'] else '**no**'} |")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")


def _human(value: float, unit: str) -> str:
    if unit == "s":
        if value < 1e-3:
            return f"{value * 1e6:.1f} µs"
        return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "GB/s":
        return f"{value:.2f} GB/s"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:g} {unit}"


def median_seconds(fn: Callable[[], object], repeat: int, number: int = 1) -> float:
    """Median over ``repeat`` samples of the mean time of ``number`` calls."""
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - began) / number)
    return statistics.median(samples)


def interleaved_medians(fns: dict[str, Callable[[], object]], repeat: int,
                        number: int = 1) -> dict[str, float]:
    """Like :func:`median_seconds` for several contenders, taking their
    samples in turns so that a busy spell of the machine hits all of them."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            began = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - began) / number)
    return {name: statistics.median(values) for name, values in samples.items()}


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
