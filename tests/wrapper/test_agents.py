"""The wrapper end to end: real onsembl-agent processes driving the fake claude, gemini and codex
CLIs (tests/fakes) exactly as they would drive the real ones, against a real hub."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.harness import AgentProcess, Dashboard, HubProcess, start_agent, wait_command, wait_until


def send(hub: HubProcess, agent: AgentProcess, content: str, **extra: object) -> dict:  # type: ignore[type-arg]
    with hub.client() as client:
        response = client.post(
            "/commands", json={"content": content, "targetAgents": [agent.agent_id], **extra}
        )
        assert response.status_code == 201, response.text
        return response.json()


def run(hub: HubProcess, agent: AgentProcess, content: str, seconds: float = 30, **extra: object) -> dict:  # type: ignore[type-arg]
    command = send(hub, agent, content, **extra)
    with hub.client() as client:
        return wait_command(client, command["id"], seconds)


def output_of(hub: HubProcess, command_id: str, expected_lines: int | None = None) -> str:
    with hub.client() as client:

        def stored() -> list[dict]:  # type: ignore[type-arg]
            body = client.get(f"/commands/{command_id}/output", params={"limit": 5000}).json()
            if expected_lines is not None and body["total"] < expected_lines:
                return []
            return body["items"] or []

        items = wait_until(stored, 15, "stored output")
        return "".join(i["content"] for i in items if i["streamType"] == "STDOUT")


def traces_of(hub: HubProcess, command_id: str, at_least: int = 1) -> list[dict]:  # type: ignore[type-arg]
    with hub.client() as client:
        return wait_until(
            lambda: len(t := client.get(f"/commands/{command_id}/traces").json()) >= at_least and t,
            15,
            "traces",
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


@pytest.fixture(params=["claude", "gemini", "codex"])
def cli_agent(hub: HubProcess, request: pytest.FixtureRequest, tmp_path: Path) -> AgentProcess:
    agent = start_agent(
        hub,
        f"{request.param}-{request.node.name[:30]}",
        kind=request.param,
        workdir=tmp_path,
        extra_env={
            "FAKE_CLI_CHILD_PID_FILE": str(tmp_path / "child.pid"),
            "FAKE_CLI_LOG": str(tmp_path / "cli.log"),
        },
    )
    agent.kind = request.param  # type: ignore[attr-defined]
    yield agent  # type: ignore[misc]
    agent.stop()


def test_plain_answer_tools_and_tokens(hub: HubProcess, cli_agent: AgentProcess) -> None:
    done = run(hub, cli_agent, "say hello scenario:tools")
    assert done["status"] == "COMPLETED", done
    execution = done["executions"][0]
    assert execution["endReason"] == "FINISHED"
    assert execution["tokensUsed"] > 0
    assert output_of(hub, done["id"]).strip()
    traces = traces_of(hub, done["id"], 2)
    calls = [t for t in traces if t["type"] == "TOOL_CALL"]
    assert calls, traces
    ids = {t["traceId"] for t in traces}
    # Every tool call's result hangs under its call, and every parent exists.
    assert all(t["parentId"] in ids for t in traces if t["parentId"] is not None)
    with hub.client() as client:
        agent = client.get(f"/agents/{cli_agent.agent_id}").json()
    assert agent["agentType"] == cli_agent.kind.upper()  # type: ignore[attr-defined]
    assert agent["health"]["commandsProcessed"] >= 0


def test_session_continues_across_commands(hub: HubProcess, cli_agent: AgentProcess, tmp_path: Path) -> None:
    first = run(hub, cli_agent, "remember the number 7 scenario:plain")
    second = run(hub, cli_agent, "what was it scenario:plain")
    assert first["status"] == second["status"] == "COMPLETED"
    assert "turn 2" in output_of(hub, second["id"]), output_of(hub, second["id"])
    calls = [json.loads(line) for line in (tmp_path / "cli.log").read_text().splitlines()]
    argv = [c["argv"] for c in calls if c["argv"] != ["--version"]]
    assert not any("resume" in a or "--resume" in a for a in argv[0])
    assert any("resume" in a or "--resume" in a for a in argv[1]), argv[1]


def test_session_continues_after_the_wrapper_restarts(
    hub: HubProcess, cli_agent: AgentProcess, tmp_path: Path
) -> None:
    """As after a reboot (systemd stops the wrapper, then starts it again): the same agent comes back
    ONLINE, and the next command continues the CLI's conversation from the state dir."""
    first = run(hub, cli_agent, "remember the number 7 scenario:plain")
    assert first["status"] == "COMPLETED"
    cli_agent.stop()
    again = start_agent(
        hub,
        cli_agent.name,
        kind=cli_agent.kind,  # type: ignore[attr-defined]
        workdir=tmp_path,
        extra_env={"FAKE_CLI_LOG": str(tmp_path / "cli.log")},
    )
    try:
        assert again.agent_id == cli_agent.agent_id
        second = run(hub, again, "what was it scenario:plain")
        assert second["status"] == "COMPLETED", second
        calls = [json.loads(line) for line in (tmp_path / "cli.log").read_text().splitlines()]
        argv = [c["argv"] for c in calls if c["argv"] != ["--version"]]
        assert any("resume" in a or "--resume" in a for a in argv[-1]), argv[-1]
    finally:
        again.stop()


def test_crash_is_failed_with_exit_code_and_stderr(hub: HubProcess, cli_agent: AgentProcess) -> None:
    done = run(hub, cli_agent, "scenario:crash")
    execution = done["executions"][0]
    assert done["status"] == "FAILED"
    assert "exited with code 3" in execution["error"]


def test_interrupt_leaves_no_orphans(hub: HubProcess, cli_agent: AgentProcess, tmp_path: Path) -> None:
    command = send(hub, cli_agent, "work for a while scenario:slow")
    pid_file = tmp_path / "child.pid"
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 20, "the CLI's child process")
    child = int(pid_file.read_text().strip())
    assert alive(child)
    with hub.client() as client:
        assert client.post(f"/commands/{command['id']}/cancel").status_code == 200
        done = wait_command(client, command["id"], 30)
    assert done["status"] == "CANCELLED"
    assert done["executions"][0]["endReason"] == "INTERRUPTED"
    wait_until(lambda: not alive(child), 10, "the CLI's child to be gone")


def test_token_budget_ends_the_command(hub: HubProcess, cli_agent: AgentProcess) -> None:
    done = run(hub, cli_agent, "scenario:slow tokens:20000", executionConstraints={"tokenBudget": 500})
    assert done["status"] == "CANCELLED", done
    assert done["executions"][0]["endReason"] == "TOKEN_BUDGET"


def test_time_limit_ends_the_command(hub: HubProcess, cli_agent: AgentProcess) -> None:
    done = run(hub, cli_agent, "scenario:slow", executionConstraints={"timeLimitMs": 1500})
    assert done["status"] == "CANCELLED"
    assert done["executions"][0]["endReason"] == "TIME_LIMIT"


def test_unknown_event_is_kept_as_raw_trace(hub: HubProcess, tmp_path: Path) -> None:
    agent = start_agent(hub, "claude-unknown", kind="claude", workdir=tmp_path)
    try:
        done = run(hub, agent, "scenario:unknown_event")
        assert done["status"] == "COMPLETED"
        traces = traces_of(hub, done["id"])
        assert any(t["name"].startswith("unknown event") for t in traces), [t["name"] for t in traces]
    finally:
        agent.stop()


def test_claude_subagent_events_hang_under_their_task(hub: HubProcess, tmp_path: Path) -> None:
    agent = start_agent(hub, "claude-subagent", kind="claude", workdir=tmp_path)
    try:
        done = run(hub, agent, "scenario:subagent")
        assert done["status"] == "COMPLETED"
        traces = traces_of(hub, done["id"], 4)
        by_id = {t["traceId"]: t for t in traces}
        tasks = [t for t in traces if t["type"] == "TOOL_CALL" and t["name"] in ("Task", "Agent")]
        assert tasks, [t["name"] for t in traces]
        under_task = [t for t in traces if t["parentId"] == tasks[0]["traceId"] and t["type"] == "RESPONSE"]
        assert any(not t["traceId"].endswith(":result") for t in under_task), under_task
        assert all(t["parentId"] in by_id for t in traces if t["parentId"])
    finally:
        agent.stop()


def test_investigate_yields_a_report_and_a_bad_one_a_draft(hub: HubProcess, tmp_path: Path) -> None:
    agent = start_agent(hub, "claude-reports", kind="claude", workdir=tmp_path)
    try:
        good = run(hub, agent, "why are orders slow scenario:report", type="INVESTIGATE")
        bad = run(hub, agent, "why are orders slow scenario:bad_report", type="INVESTIGATE")
        with hub.client() as client:
            report = wait_until(
                lambda: client.get("/reports", params={"commandId": good["id"]}).json()["items"], 15, "r"
            )[0]
            draft = wait_until(
                lambda: client.get("/reports", params={"commandId": bad["id"]}).json()["items"], 15, "d"
            )[0]
        assert report["status"] == "COMPLETE" and report["content"]["findings"]
        assert draft["status"] == "DRAFT" and draft["content"]["raw"]
    finally:
        agent.stop()


async def test_claude_permission_prompt_is_answered_from_the_hub(hub: HubProcess, tmp_path: Path) -> None:
    """As a TUI sees it: INPUT_REQUIRED with the request id, the agent WAITING_INPUT, an answer,
    and the command goes on to completion."""
    agent = start_agent(hub, "claude-permission", kind="claude", workdir=tmp_path)
    dashboard = await Dashboard(hub).connect()
    try:
        command = send(hub, agent, "delete the temp files scenario:permission")
        required = await dashboard.wait_for(
            lambda m: m.type == "INPUT_REQUIRED" and m.payload.command_id == command["id"], 20
        )
        assert required.payload.can_answer and required.payload.agent_name == "claude-permission"
        with hub.client() as client:
            assert client.get(f"/agents/{agent.agent_id}").json()["activity"] == "WAITING_INPUT"
            wrong = client.post(f"/commands/{command['id']}/input", json={"requestId": "nope", "allow": True})
            assert wrong.status_code == 404
            answer = client.post(
                f"/commands/{command['id']}/input",
                json={"requestId": required.payload.request_id, "allow": True},
            )
            assert answer.status_code == 204, answer.text
            done = wait_command(client, command["id"], 30)
            assert done["status"] == "COMPLETED", done
            assert client.get(f"/agents/{agent.agent_id}").json()["activity"] != "WAITING_INPUT"
            audit = client.get("/audit-logs", params={"commandId": command["id"]}).json()["items"]
            assert {"agent.needs_input", "command.input_answered"} <= {e["action"] for e in audit}
    finally:
        await dashboard.close()
        agent.stop()


def test_changes_are_recorded_per_command(hub: HubProcess, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    (repo / "a.txt").write_text("one\n")
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    agent = start_agent(hub, "shell-changes", workdir=repo, options=("--worktree",))
    try:
        done = run(hub, agent, "echo two >> a.txt && printf 'x\\ny\\n' > new.txt")
        changes = done["executions"][0]["changes"]
        assert changes is not None, done
        files = {f["path"]: f for f in changes["files"]}
        assert files["a.txt"]["added"] == 1 and files["new.txt"]["status"] == "added"
        assert changes["added"] == 3 and "+two" in changes["patch"]
        # The agent worked in its own worktree and branch; the user's checkout is untouched.
        assert (repo / "a.txt").read_text() == "one\n"
        branches = subprocess.run(
            ["git", "branch", "--list", "onsembl/*"], cwd=repo, capture_output=True, text=True
        )
        assert "onsembl/shell-changes" in branches.stdout
        nothing = run(hub, agent, "true")
        assert nothing["executions"][0]["changes"]["files"] == []
    finally:
        agent.stop()


def test_health_reports_commands_tokens_and_cost(hub: HubProcess, tmp_path: Path) -> None:
    agent = start_agent(hub, "claude-health", kind="claude", workdir=tmp_path)
    try:
        run(hub, agent, "scenario:plain")
        run(hub, agent, "scenario:plain")
        with hub.client() as client:
            health = wait_until(
                lambda: (
                    (h := client.get(f"/agents/{agent.agent_id}").json()["health"])["commandsProcessed"] == 2
                    and h
                ),
                10,
                "health after two commands",
            )
        assert health["tokensUsed"] > 0 and health["costUsd"] > 0
        assert health["memoryBytes"] > 10_000_000 and health["processCount"] >= 1
        assert health["averageResponseMs"] > 0 and health["uptimeSeconds"] > 0
    finally:
        agent.stop()


def test_output_survives_a_hub_killed_mid_stream(fresh_hub: HubProcess, tmp_path: Path) -> None:
    """The wrapper keeps running the command while the hub is away, buffers what it produces and
    replays it on reconnect; the hub drops what it already had. Stored: every line, once, in order."""
    import signal

    hub = fresh_hub.start()
    agent = start_agent(hub, "shell-replay")
    try:
        command = send(hub, agent, "for i in $(seq 1 120); do echo line-$i; sleep 0.05; done")
        with hub.client() as client:
            wait_until(
                lambda: client.get(f"/commands/{command['id']}/output").json()["total"] >= 3,
                10,
                "some output",
            )
        hub.stop(signal.SIGKILL)
        hub.start()
        with hub.client() as client:
            done = wait_command(client, command["id"], 60)
            assert done["status"] == "COMPLETED", done

            def complete() -> list[dict]:  # type: ignore[type-arg]
                body = client.get(f"/commands/{command['id']}/output", params={"limit": 5000}).json()
                items = body["items"]
                text = "".join(i["content"] for i in items)
                return items if text.count("\n") >= 120 else []

            items = wait_until(complete, 20, "all output stored")
        sequences = [i["sequence"] for i in items]
        assert sequences == list(range(len(items))), sequences  # no gap, no duplicate
        assert "".join(i["content"] for i in items).split() == [f"line-{n}" for n in range(1, 121)]
    finally:
        agent.stop()
