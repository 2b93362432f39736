"""The soak benchmark's short variant (benchmarks/soak.py --quick): 20 agents, 3 TUI clients, commands
every few seconds for a minute. Every command completes, nothing is refused, no error is logged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import timeout

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def test_soak_quick() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--quick"],
        cwd=ROOT,
        env={**_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout(400),
    )
    print(result.stdout)
    figures = dict(
        line.split(": ", 1)
        for line in result.stdout.splitlines()
        if ": " in line and not line.startswith("#")
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert figures["commands_completed"].split()[0] == figures["commands_sent"].split()[0]
    assert figures["hub_log_errors"].startswith("0 ")


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("ONSEMBL_")}
