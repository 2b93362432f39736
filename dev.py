#!/usr/bin/env python3
"""Bootstrap and run Onsembl from a checkout, with nothing but Python 3.11+ installed.

    python3 dev.py up       # install into .venv (first run only), start hub, workers, demo agents, TUI
    python3 dev.py test     # install into .venv (first run only), run the test suite

Everything else: python3 dev.py run <onsembl args...>, or use .venv/bin/onsembl directly.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".onsembl-installed"


def ensure_env(extras: str) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file runs before the venv, on any python3
        sys.exit(f"Onsembl needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not PY.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    print(f"installing onsembl[{extras}] into .venv ...", flush=True)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "-e", f".[{extras}]"], cwd=ROOT, check=True)
    STAMP.write_text(digest)


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return
    verb, rest = args[0], args[1:]
    ensure_env("dev")
    if verb == "up":
        os.execv(str(BIN / "onsembl"), [str(BIN / "onsembl"), "up", *rest])
    elif verb == "test":
        os.execv(str(PY), [str(PY), "-m", "pytest", *rest])
    elif verb == "run":
        os.execv(str(BIN / "onsembl"), [str(BIN / "onsembl"), *rest])
    else:
        sys.exit(f"unknown verb {verb!r}; see python3 dev.py --help")


if __name__ == "__main__":
    main()
