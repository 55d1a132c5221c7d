"""Run the whole benchmark suite and print one table; also write it as JSON.

    python -m benchmarks                      # a few minutes on 2 cores
    python -m benchmarks --quick              # small sizes: a smoke run
    python -m benchmarks --only hits,results  # some sections
    python -m benchmarks --json out.json
    python -m benchmarks --markdown benchmarks/results.md   # the table in the docs

Every ratio compares figures measured in this one run (machines are
noisy: compare only within a run).  Ratios are "contender / labcache" for
times and "labcache / contender" for speeds, so above 1 means labcache wins.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from importlib import metadata

from . import hits, network, processes, results, scale, signing
from ._common import Report

SECTIONS = {"hits": hits.run, "results": results.run, "processes": processes.run,
            "scale": scale.run, "signing": signing.run, "network": network.run}


def _environment() -> dict[str, object]:
    versions = {}
    for package in ("labcache", "joblib", "diskcache", "cachier", "numpy", "pandas", "redis"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "versions": versions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--json", default="benchmarks/results.json", help="where to write JSON")
    parser.add_argument("--markdown", default=None,
                        help="also write Markdown tables here (docs/performance.md includes "
                             "benchmarks/results.md)")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    report = Report()
    environment = _environment()
    print(f"labcache benchmark suite: {environment}")
    began = time.perf_counter()
    for name in chosen:
        SECTIONS[name](report, args.quick)
    report.print_targets()
    report.write_json(args.json, environment)
    if args.markdown:
        report.write_markdown(args.markdown, environment)
    print(f"\n{len(report.rows)} figures in {time.perf_counter() - began:.0f} s; "
          f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
