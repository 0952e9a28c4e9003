"""``python -m benchmarks [--json] [--soak SECONDS]``: measure, then print a table (or one
JSON object) with every target marked met or missed."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from benchmarks.report import table
from benchmarks.suite import SECTIONS, Sizes, collect


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run, print; 0 once the run completes (met or not)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Measure tradeguard against its performance targets.")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                        help=f"length of the RSS soak (default {Sizes.soak_s:g} s)")
    parser.add_argument("--soak-rate", type=int, default=Sizes.soak_rate, metavar="QUOTES_PER_S",
                        help="quotes per second during the soak")
    parser.add_argument("--only", default="", metavar="SECTIONS",
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    args = parser.parse_args(argv)

    sections = tuple(s.strip() for s in args.only.split(",") if s.strip()) or SECTIONS
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    sizes = replace(Sizes(), soak_s=Sizes.soak_s if args.soak is None else args.soak,
                    soak_rate=args.soak_rate,
                    # A soak run on its own is already in a fresh interpreter.
                    soak_subprocess=sections != ("soak",))

    from tradeguard.logs import setup_logging, shutdown_logging

    # The actors log as in service (enqueued file sinks), into a scratch directory.
    log_dir = Path(tempfile.mkdtemp(prefix="tg-bench-logs-"))
    setup_logging(log_dir, level="INFO", stderr=False)
    try:
        progress = None if args.json else lambda s: print(f"... {s}", file=sys.stderr, flush=True)
        results = collect(sizes, sections, progress=progress)
    finally:
        shutdown_logging()
        shutil.rmtree(log_dir, ignore_errors=True)
    if "soak" in sections and args.soak is None:
        results["notes"][0] += " (the default; --soak SECONDS for a longer one)"
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
