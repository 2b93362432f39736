"""``onsembl up``: the hub, its workers and local demo agents in one command."""

from __future__ import annotations

from shared.config import Settings


def run_up(settings: Settings, *, headless: bool, demo_agents: int) -> None:
    raise SystemExit("onsembl up: not yet available")
