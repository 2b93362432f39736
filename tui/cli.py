"""``onsembl-tui``: the terminal UI (its own issue); this entry point says so until it lands."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    print(
        "onsembl-tui: the terminal UI is not built yet; use the REST API or `onsembl` meanwhile",
        file=sys.stderr,
    )
    raise SystemExit(1)
