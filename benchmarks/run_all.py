"""Run every benchmark in sequence and print their metric lines, then the targets they missed.

    PYTHONPATH=. .venv/bin/python benchmarks/run_all.py [--quick] [NAME ...]

Exit status: 1 when a benchmark failed to run, 2 with --strict when a target was missed, else 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "dispatch_latency",
    "fleet_dispatch",
    "emergency_stop",
    "output_latency",
    "saturation",
    "resources",
    "tui_streaming",
    "idle_connections",
]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="pass --quick to each benchmark")
    parser.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"any of {', '.join(BENCHMARKS)} (default: all)"
    )
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    names = args.names or BENCHMARKS
    failed: list[str] = []
    missed: list[str] = []
    for name in names:
        command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])]
        print(f"== {name} ({' '.join(command[1:])})", flush=True)
        started = time.monotonic()
        result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(result.stdout)
        print(f"== {name}: exit {result.returncode} after {time.monotonic() - started:.0f}s", flush=True)
        if result.returncode != 0:
            failed.append(name)
        missed += [
            f"{name}: {line}"
            for line in result.stdout.splitlines()
            if "MISSED" in line or "DISTURBED" in line
        ]
    print()
    print("missed targets (and disturbed runs):" if missed else "no target missed", flush=True)
    for line in missed:
        print(f"  {line}")
    if failed:
        print(f"failed to run: {', '.join(failed)}")
        return 1
    return 2 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
