"""TUI tests: the real app (built by the same factory as ``onsembl-tui``) against a live hub with
real wrapper agents, driven by Textual's Pilot."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import AgentProcess, HubProcess, async_wait_until, start_agent
from tui.app import OnsemblApp
from tui.client.auth import TokenSource
from tui.config import TuiSettings


def make_app(hub: HubProcess, tmp_path: Path | None = None, **settings: object) -> OnsemblApp:
    """The app as ``onsembl-tui --server URL --token T`` builds it (no bell, no history on disk)."""
    defaults: dict[str, object] = {"bell": False, "history_file": None, "theme": "textual-dark"}
    defaults.update(settings)
    return OnsemblApp(
        server_url=hub.url, tokens=TokenSource(hub.user_token()), settings=TuiSettings(**defaults)
    )


@pytest.fixture(scope="module")
def agents(hub: HubProcess) -> Iterator[dict[str, AgentProcess]]:
    """Two shell agents (``bash -c``) connected to the module's hub."""
    started = {name: start_agent(hub, name) for name in ("alpha", "beta")}
    yield started
    for agent in started.values():
        agent.stop()


async def wait_for(predicate: Callable[[], object], seconds: float, what: str) -> object:
    return await async_wait_until(predicate, seconds, what)
