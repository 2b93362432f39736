"""The trace, changes and command detail screens against a live hub with real wrapper agents (the
fake claude CLI for traces, a shell agent in its own git worktree for changes)."""

from __future__ import annotations

import io
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from rich.console import Console
from textual.app import App, ComposeResult
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Label, Static, TabbedContent

from shared.api import TraceEventRecord
from shared.enums import TraceType
from tests.harness import TERMINAL, AgentProcess, HubProcess, start_agent
from tests.tui.conftest import make_app, wait_for
from tui.app import OnsemblApp
from tui.screens.changes import ChangesScreen
from tui.screens.command_detail import CommandDetailScreen
from tui.screens.trace import TraceScreen
from tui.widgets.trace_view import TraceView


def text_of(renderable: Any, width: int = 120) -> str:
    console = Console(width=width, file=io.StringIO(), record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def send(client: httpx.Client, agent_id: str, content: str) -> str:
    response = client.post("/commands", json={"content": content, "targetAgents": [agent_id]})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def ended(hub: HubProcess, command_id: str, seconds: float = 30) -> dict[str, Any]:
    with hub.client() as client:
        return await wait_for(  # type: ignore[return-value]
            lambda: (body := client.get(f"/commands/{command_id}").json())["status"] in TERMINAL and body,
            seconds,
            f"command {command_id} to end",
        )


S = TypeVar("S", bound=Screen[None])


def on_top(app: App[None], kind: type[S], ready: Callable[[S], object]) -> S | None:
    """The screen on top if it is a ``kind`` and ``ready`` (None while it is still being built)."""
    screen = app.screen
    if not isinstance(screen, kind):
        return None
    try:
        return screen if ready(screen) else None
    except NoMatches:
        return None


def tool_call_with_result(view: TraceView) -> Any:
    """A tool call drawn under its parent message, with its result under it (None if none yet)."""
    for key, record in view.records.items():
        if record.type is not TraceType.TOOL_CALL or not record.parent_id:
            continue
        node = view.nodes[key]
        parent = node.parent
        results = [c for c in node.children if c.data and view.records[c.data].type is TraceType.RESPONSE]
        if parent is not None and parent.data == (key[0], record.parent_id) and results:
            return node
    return None


@pytest.fixture
def claude(hub: HubProcess, tmp_path: Path) -> Any:
    # Events 0.1 s apart: the trace is still growing while the screen is open.
    agent = start_agent(
        hub, "tui-claude", kind="claude", workdir=tmp_path, extra_env={"FAKE_CLI_DELAY": "0.1"}
    )
    yield agent
    agent.stop()


async def test_trace_tree_grows_live_with_tool_calls_under_their_parents(
    hub: HubProcess, claude: AgentProcess
) -> None:
    app = make_app(hub)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(lambda: claude.agent_id in app.hub.agents, 15, "the claude agent listed")
        with hub.client() as client:
            # Paused, the agent holds the command: the screen opens before any trace exists.
            assert client.post(f"/agents/{claude.agent_id}/pause", json={"reason": "test"}).status_code == 200
            command_id = send(client, claude.agent_id, "look around the project scenario:tools")
        app.open_trace(command_id)
        screen = await wait_for(lambda: on_top(app, TraceScreen, lambda s: s.loaded), 15, "trace loaded")
        assert isinstance(screen, TraceScreen)
        view = screen.view
        assert view.totals.nodes == 0

        # From now on the store answers nothing: every node must come from the live stream.
        async def nothing_stored(command_id: str) -> list[TraceEventRecord]:
            return []

        app.api.traces = nothing_stored  # type: ignore[method-assign]
        with hub.client() as client:
            assert (
                client.post(f"/agents/{claude.agent_id}/resume", json={"reason": "test"}).status_code == 200
            )
        node = await wait_for(lambda: tool_call_with_result(view), 30, "a tool call with its result under it")
        assert node is not None
        # At the end the screen reads the stored trace again (what the live state may have folded).
        del app.api.traces
        await ended(hub, command_id)
        await wait_for(lambda: screen.status is not None and screen.status.terminal, 15, "the end seen live")

        # Every tool call of the scenario hangs under the message that made it, its result under it.
        calls = [(k, r) for k, r in view.records.items() if r.type is TraceType.TOOL_CALL]
        assert {r.name for _, r in calls} >= {"Bash", "Read", "Edit"}, [r.name for _, r in calls]
        for key, record in calls:
            assert view.nodes[key].parent.data == (key[0], record.parent_id)  # type: ignore[union-attr]
            results = [c.data for c in view.nodes[key].children]
            assert results == [(key[0], f"{key[1]}:result")], results
        # A completed call kept the input its first record carried (the end record has none).
        bash_key = next(k for k, r in calls if r.name == "Bash")
        await wait_for(lambda: view.records[bash_key].content, 15, "the stored trace merged")
        bash = view.records[bash_key]
        assert bash.content == {"command": "ls -la", "description": "List files in the project root"}
        assert bash.duration_ms is not None
        # The header counts what the tree holds; the node's label says what it ran.
        label = screen.query_one("#trace-title", Label)
        await wait_for(lambda: "COMPLETED" in text_of(label.content), 10, "the end in the header")
        await wait_for(lambda: screen.loaded, 10, "the stored trace read again")
        title = text_of(label.content)
        assert f"{view.totals.nodes} nodes" in title and "loading" not in title, title
        assert "ls -la" in str(view.nodes[bash_key].label)

        # The detail pane shows the call's input and its result.
        view.trace_tree.move_cursor(view.nodes[bash_key])
        await pilot.pause()
        detail = text_of(view.query_one("#trace-detail-body", Static).content)
        assert "Input" in detail and '"command": "ls -la"' in detail, detail
        assert "Result" in detail and "README.md" in detail, detail

        # c: the changes of this command; o: its detail; escape: back to the trace.
        await pilot.press("c")
        assert isinstance(app.screen, ChangesScreen) and app.screen.command_id == command_id
        await pilot.press("escape", "o")
        assert isinstance(app.screen, CommandDetailScreen) and app.screen.command_id == command_id
        await pilot.press("escape")
        assert app.screen is screen
        assert view.trace_tree.cursor_node is view.nodes[bash_key]  # the cursor stayed where it was


class TraceApp(App[None]):
    def compose(self) -> ComposeResult:
        yield TraceView(id="view")


def record(trace_id: str, parent_id: str | None = None, **fields: Any) -> TraceEventRecord:
    values: dict[str, Any] = {"type": TraceType.RESPONSE, "name": trace_id}
    values.update(fields)
    return TraceEventRecord(command_id="c1", agent_id="a1", trace_id=trace_id, parent_id=parent_id, **values)


async def test_a_parent_arriving_late_takes_its_children_and_the_cursor_stays() -> None:
    app = TraceApp()
    async with app.run_test(size=(120, 30)) as pilot:
        view = app.query_one(TraceView)
        call = record(
            "t1", "m1", type=TraceType.TOOL_CALL, name="Bash", content={"command": "ls"}, started_at=1
        )
        view.merge([call, record("t1:result", "t1", content="total 0")])
        # The message has not come yet: the call hangs under its agent.
        assert view.nodes[("a1", "t1")].parent is view.agents["a1"]
        view.trace_tree.move_cursor(view.nodes[("a1", "t1:result")])
        view.nodes[("a1", "t1")].collapse()
        view.trace_tree.move_cursor(view.nodes[("a1", "t1")])
        await pilot.pause()

        view.merge([record("m0"), record("m1", tokens_used=42)])
        call_node = view.nodes[("a1", "t1")]
        assert call_node.parent is view.nodes[("a1", "m1")]
        assert [c.data for c in call_node.children] == [("a1", "t1:result")]
        assert not call_node.is_expanded  # collapsed before the move, collapsed after
        await pilot.pause()
        assert view.trace_tree.cursor_node is call_node

        # The call's end leaves its input out: the input stays; the duration and error come in.
        view.merge([call.model_copy(update={"content": None, "duration_ms": 5, "error": "exit 2"})])
        merged = view.records[("a1", "t1")]
        assert merged.content == {"command": "ls"} and merged.duration_ms == 5
        assert view.totals == view.totals.__class__(nodes=4, tokens=42, errors=1, running=0)
        assert "exit 2" in str(view.nodes[("a1", "t1")].label)
        # A cycle does not loop: both stay drawn.
        view.merge([record("x", "y"), record("y", "x")])
        assert ("a1", "x") in view.nodes and ("a1", "y") in view.nodes


async def test_command_detail_pages_the_stored_output(
    hub: HubProcess, agents: dict[str, AgentProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha = agents["alpha"]
    monkeypatch.setattr(CommandDetailScreen, "PAGE", 10)
    app = make_app(hub)
    async with app.run_test(size=(120, 40)) as pilot:
        with hub.client() as client:
            # Paced, so the wrapper sends (and the hub stores) the lines as many entries.
            script = "for i in $(seq 1 25); do echo detail-line-$i; sleep 0.15; done"
            command_id = send(client, alpha.agent_id, script)
        await ended(hub, command_id)
        with hub.client() as client:
            stored = client.get(f"/commands/{command_id}/output", params={"limit": 5000}).json()["items"]
        assert len(stored) > 20, "the lines were stored in too few entries to page them"
        expected = [numbers(item["content"]) for item in stored]
        app.open_command(command_id)
        screen = await wait_for(
            lambda: on_top(app, CommandDetailScreen, lambda s: s.output_total),
            15,
            "the detail with its output",
        )
        assert isinstance(screen, CommandDetailScreen)
        log = screen.output_log

        def shown() -> list[int]:
            return numbers("\n".join(log.plain_lines()))

        def first(entries: int) -> list[int]:
            return [n for part in expected[:entries] for n in part]

        await wait_for(lambda: shown() == first(10), 10, "the first page shown")
        assert f"10 of {len(stored)}" in str(screen.query_one("#output-status", Label).content)
        await pilot.press("m")
        await wait_for(lambda: shown() == first(20), 10, "the second page")
        await pilot.press("m")
        await wait_for(lambda: shown() == list(range(1, 26)), 10, "every line, once, in order")
        assert "25 lines" in str(screen.query_one("#output-status", Label).content) or len(stored) != 25
        summary = text_of(screen.query_one("#detail-summary", Static).content)
        assert "COMPLETED" in summary and "alpha" in summary and "FINISHED" in summary, summary

        # The other tabs say there is nothing to show; keys switch tabs and screens.
        await pilot.press("2", "3")  # from the trace's tree straight to the report
        assert screen.query_one(TabbedContent).active == "tab-report"
        await pilot.press("4")
        await wait_for(
            lambda: "no changes recorded" in str(screen.diff.query_one(Label).content), 10, "no diff"
        )
        await pilot.press("t")
        assert isinstance(app.screen, TraceScreen)
        await pilot.press("escape", "c")
        assert isinstance(app.screen, ChangesScreen)


def numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"detail-line-(\d+)", text)]


def git_repo(path: Path) -> Path:
    path.mkdir()
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=path, check=True)
    (path / "a.txt").write_text("one\n")
    subprocess.run([*git, "add", "."], cwd=path, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=path, check=True)
    return path


async def test_changes_screen_shows_the_diff_file_by_file(hub: HubProcess, tmp_path: Path) -> None:
    agent = start_agent(hub, "tui-changes", workdir=git_repo(tmp_path / "repo"), options=("--worktree",))
    try:
        with hub.client() as client:
            edited = send(client, agent.agent_id, "echo two >> a.txt && printf 'x\\ny\\n' > new.txt")
        await ended(hub, edited)
        with hub.client() as client:
            nothing = send(client, agent.agent_id, "true")
        await ended(hub, nothing)
        app: OnsemblApp = make_app(hub)
        async with app.run_test(size=(120, 40)) as pilot:
            app.open_changes(edited)
            screen = await wait_for(
                lambda: on_top(app, ChangesScreen, lambda s: s.diff.files), 15, "the changes loaded"
            )
            assert isinstance(screen, ChangesScreen)
            diff = screen.diff
            assert [f.path for f in diff.files] == ["a.txt", "new.txt"]
            totals = str(diff.query_one("#diff-totals", Label).content)
            assert "+3" in totals and "2 files" in totals, totals
            assert (
                diff.shown_path == "a.txt"
                and "+two" in diff.shown_patch
                and "new.txt" not in diff.shown_patch
            )
            body = text_of(diff.query_one("#diff-patch-body", Static).content)
            assert "+two" in body and " one" in body, body

            await pilot.press("right_square_bracket")
            assert diff.shown_path == "new.txt" and "+x\n+y" in diff.shown_patch
            await pilot.press("right_square_bracket")  # the last file stays selected
            assert diff.shown_path == "new.txt"
            await pilot.press("left_square_bracket")
            assert diff.shown_path == "a.txt"

            await pilot.press("escape")
            await wait_for(lambda: not isinstance(app.screen, ChangesScreen), 5, "back to the control center")
            app.open_changes(nothing)
            empty = await wait_for(
                lambda: on_top(
                    app,
                    ChangesScreen,
                    lambda s: "no changes recorded" in str(s.diff.query_one("#diff-totals", Label).content),
                ),
                15,
                "no changes said",
            )
            assert isinstance(empty, ChangesScreen) and empty.diff.files == []
    finally:
        agent.stop()
