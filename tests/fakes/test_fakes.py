"""Tests of the fake agent CLIs themselves (tests/fakes/bin/{claude,gemini,codex}).

They run the fakes as real processes, exactly as the wrapper would, and check the event shapes,
sessions, exit codes, signals and the tool child process."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

BIN = Path(__file__).resolve().parent / "bin"
CLAUDE_STREAM = ["--output-format", "stream-json", "--verbose"]
GEMINI_STREAM = ["--output-format", "stream-json", "--skip-trust"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_CLI_", "GEMINI_CLI_"))}
    env.update(
        FAKE_CLI_STATE_DIR=str(tmp_path / "state"),
        FAKE_CLI_DELAY="0",
        FAKE_CLI_CHILD_PID_FILE=str(tmp_path / "child.pid"),
        FAKE_CLI_LOG=str(tmp_path / "invocations.jsonl"),
        # `#!/usr/bin/env python3`: this interpreter first, rather than a slow version-manager shim
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def run(
    cli: str,
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    stdin: Any = subprocess.DEVNULL,
    timeout: float = 15,
) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run(
        [str(BIN / cli), *args], stdin=stdin, capture_output=True, env=env, cwd=cwd, timeout=timeout
    )
    events = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]
    return proc.returncode, events, proc.stderr.decode()


class Live:
    """A fake started like the wrapper starts it (own session, pipes), read as it goes."""

    def __init__(
        self, cli: str, args: list[str], env: dict[str, str], cwd: Path, stdin: Any = subprocess.DEVNULL
    ):
        self.proc = subprocess.Popen(
            [str(BIN / cli), *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(json.loads(line))
        self.queue.put(None)

    def wait_for(self, predicate: Any, timeout: float = 5) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.queue.get(timeout=max(0.01, deadline - time.monotonic()))
            if event is None:
                raise AssertionError(f"stream ended; got {[e['type'] for e in self.events]}")
            self.events.append(event)
            if predicate(event):
                return event

    def finish(self, timeout: float = 5) -> int:
        code = self.proc.wait(timeout=timeout)
        while (event := self.queue.get(timeout=timeout)) is not None:
            self.events.append(event)
        return code

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def child_pid(env: dict[str, str]) -> int:
    return int(Path(env["FAKE_CLI_CHILD_PID_FILE"]).read_text())


def wait_dead(pid: int, timeout: float = 3) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def json_block(text: str) -> str:
    match = re.search(r"```json\n(.*?)\n```", text, re.S)
    assert match, text
    return match.group(1)


# ---- all three ---------------------------------------------------------------------------------------


def test_versions(env: dict[str, str], work: Path) -> None:
    expected = {"claude": "2.1.0 (Claude Code)\n", "gemini": "0.9.0\n", "codex": "codex-cli 0.50.0\n"}
    for cli, version in expected.items():
        proc = subprocess.run([BIN / cli, "--version"], capture_output=True, text=True, env=env, cwd=work)
        assert (proc.returncode, proc.stdout) == (0, version)


def test_unknown_flags_are_usage_errors(env: dict[str, str], work: Path) -> None:
    for cli, args in (
        ("claude", ["-p", "x", "--bogus"]),
        ("gemini", ["--bogus", "-p", "x"]),
        ("codex", ["exec", "--bogus", "x"]),
    ):
        code, events, stderr = run(cli, args, env, work)
        assert (code, events) == (2, []), cli
        assert "bogus" in stderr


def test_invocation_log(env: dict[str, str], work: Path) -> None:
    run("claude", ["-p", "hi", *CLAUDE_STREAM], env, work)
    run("gemini", ["-p", "hi", *GEMINI_STREAM], env, work)
    subprocess.run(
        [BIN / "codex", "exec", "--json", "--skip-git-repo-check", "hi"],
        input=b"",
        env=env,
        cwd=work,
        capture_output=True,
    )
    records = [json.loads(line) for line in Path(env["FAKE_CLI_LOG"]).read_text().splitlines()]
    assert [r["cli"] for r in records] == ["claude", "gemini", "codex"]
    assert records[0]["argv"] == ["-p", "hi", *CLAUDE_STREAM]
    assert records[0]["input_format"] == "text"
    assert [r["stdin"] for r in records] == ["devnull", "devnull", "pipe"]


@pytest.mark.parametrize("cli", ["claude", "gemini", "codex"])
def test_report_and_bad_report(cli: str, env: dict[str, str], work: Path) -> None:
    args = {
        "claude": ["-p", "{p}", *CLAUDE_STREAM],
        "gemini": ["-p", "{p}", *GEMINI_STREAM],
        "codex": ["exec", "--json", "--skip-git-repo-check", "{p}"],
    }[cli]

    def final_text(prompt: str) -> str:
        code, events, _ = run(cli, [a.replace("{p}", prompt) for a in args], env, work)
        assert code == 0
        if cli == "claude":
            return str(events[-1]["result"])
        if cli == "gemini":
            return "".join(
                e["content"] for e in events if e["type"] == "message" and e["role"] == "assistant"
            )
        messages = [
            e["item"]
            for e in events
            if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"
        ]
        return str(messages[-1]["text"])

    report = json.loads(json_block(final_text("investigate scenario:report")))
    assert set(report) == {"title", "summary", "sections", "findings", "recommendations"}
    assert {"title", "severity", "description", "evidence"} <= set(report["findings"][0])
    with pytest.raises(ValueError):
        json.loads(json_block(final_text("investigate scenario:bad_report")))


@pytest.mark.parametrize("cli", ["claude", "gemini", "codex"])
def test_crash_and_lines(cli: str, env: dict[str, str], work: Path) -> None:
    base = {
        "claude": ["-p", *CLAUDE_STREAM],
        "gemini": [*GEMINI_STREAM, "-p"],
        "codex": ["exec", "--json", "--skip-git-repo-check"],
    }[cli]
    code, events, stderr = run(cli, [*base, "scenario:crash"], env, work)
    assert code == 3 and stderr.strip()
    assert not [e for e in events if e["type"] in ("result", "turn.completed", "turn.failed")]
    code, events, _ = run(cli, [*base, "scenario:lines:200"], env, work)
    assert code == 0
    text = json.dumps(events)
    assert "line 1 of 200" in text and "line 200 of 200" in text


# ---- claude --------------------------------------------------------------------------------------------


def test_claude_plain(env: dict[str, str], work: Path) -> None:
    code, events, _ = run("claude", ["-p", "hello scenario:plain", *CLAUDE_STREAM], env, work)
    assert code == 0
    init, *middle, result = events
    assert (init["type"], init["subtype"], init["claude_code_version"]) == ("system", "init", "2.1.0")
    sid = init["session_id"]
    assistant = [e for e in middle if e["type"] == "assistant"]
    assert assistant and all(e["session_id"] == sid for e in assistant)
    usage = assistant[0]["message"]["usage"]
    assert {"input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"} <= set(
        usage
    )
    assert result["type"] == "result" and result["subtype"] == "success" and not result["is_error"]
    assert result["session_id"] == sid and result["num_turns"] == 1
    assert result["result"].endswith(f"turn 1 of session {sid}.")
    assert result["total_cost_usd"] > 0 and result["usage"]["output_tokens"] == usage["output_tokens"]
    assert set(result["modelUsage"]) == {init["model"]}


def test_claude_flag_checks(env: dict[str, str], work: Path) -> None:
    code, events, stderr = run("claude", ["-p", "hi", "--output-format", "stream-json"], env, work)
    assert (code, events) == (1, []) and "requires --verbose" in stderr
    # commander variadic: --allowedTools swallows the prompt that follows it
    code, _, stderr = run("claude", ["-p", *CLAUDE_STREAM, "--allowedTools", "Bash", "hi"], env, work)
    assert code == 1 and "Input must be provided" in stderr


def test_claude_tools_and_child(env: dict[str, str], work: Path) -> None:
    code, events, _ = run("claude", ["-p", "scenario:tools", *CLAUDE_STREAM], env, work)
    assert code == 0
    uses = [
        b
        for e in events
        if e["type"] == "assistant"
        for b in e["message"]["content"]
        if b["type"] == "tool_use"
    ]
    results = [
        b
        for e in events
        if e["type"] == "user"
        for b in e["message"]["content"]
        if b["type"] == "tool_result"
    ]
    assert [u["name"] for u in uses] == ["Bash", "Read", "Edit"]
    assert [r["tool_use_id"] for r in results] == [u["id"] for u in uses]
    # a message with text + tool_use comes as two lines with the same message id
    first = [e for e in events if e["type"] == "assistant"][:2]
    assert first[0]["message"]["id"] == first[1]["message"]["id"]
    distinct = {
        e["message"]["id"]: e["message"]["usage"]["output_tokens"] for e in events if e["type"] == "assistant"
    }
    assert events[-1]["usage"]["output_tokens"] == sum(distinct.values())
    pid = child_pid(env)
    assert wait_dead(pid)


def test_claude_subagent(env: dict[str, str], work: Path) -> None:
    code, events, _ = run("claude", ["-p", "scenario:subagent", *CLAUDE_STREAM], env, work)
    assert code == 0
    task = next(
        b
        for e in events
        if e["type"] == "assistant"
        for b in e["message"]["content"]
        if b.get("name") == "Task"
    )
    inner = [e for e in events if e.get("parent_tool_use_id") == task["id"]]
    assert {e["type"] for e in inner} == {"user", "assistant"}
    subtypes = [e["subtype"] for e in events if e["type"] == "system"]
    assert subtypes.index("task_started") < subtypes.index("task_notification")
    assert len(events[-1]["modelUsage"]) == 2


def test_claude_resume(env: dict[str, str], work: Path) -> None:
    _, first, _ = run("claude", ["-p", "one", *CLAUDE_STREAM], env, work)
    sid = first[0]["session_id"]
    code, second, _ = run("claude", ["--resume", sid, "-p", "two", *CLAUDE_STREAM], env, work)
    assert code == 0 and second[0]["session_id"] == sid == second[-1]["session_id"]
    assert second[-1]["result"].endswith(f"turn 2 of session {sid}.")
    code, events, stderr = run(
        "claude", ["--resume", "00000000-0000-0000-0000-000000000000", "-p", "x", *CLAUDE_STREAM], env, work
    )
    assert (code, events) == (1, []) and "No conversation found" in stderr
    other = work / "elsewhere"
    other.mkdir()
    code, _, stderr = run("claude", ["--resume", sid, "-p", "x", *CLAUDE_STREAM], env, other)
    assert code == 1 and "No conversation found" in stderr  # sessions are kept per project directory
    new = "11111111-2222-3333-4444-555555555555"
    assert (
        run("claude", ["--session-id", new, "-p", "x", *CLAUDE_STREAM], env, work)[1][0]["session_id"] == new
    )


def test_claude_max_turns_and_budget(env: dict[str, str], work: Path) -> None:
    code, events, _ = run(
        "claude", ["-p", "scenario:max_turns", "--max-turns", "2", *CLAUDE_STREAM], env, work
    )
    assert code == 1
    assert (events[-1]["subtype"], events[-1]["is_error"], events[-1]["num_turns"]) == (
        "error_max_turns",
        True,
        2,
    )
    code, events, _ = run("claude", ["-p", "write a lot tokens:3000", *CLAUDE_STREAM], env, work)
    outputs = {
        e["message"]["id"]: e["message"]["usage"]["output_tokens"] for e in events if e["type"] == "assistant"
    }
    assert len(outputs) >= 5 and 3000 <= sum(outputs.values()) < 3100
    code, events, _ = run(
        "claude", ["-p", "tokens:3000", "--max-budget-usd", "0.03", *CLAUDE_STREAM], env, work
    )
    assert code == 1 and events[-1]["subtype"] == "error_max_budget_usd"
    assert 1 < len([e for e in events if e["type"] == "assistant"]) < 5


def test_claude_partial_messages(env: dict[str, str], work: Path) -> None:
    _, events, _ = run("claude", ["-p", "hi", "--include-partial-messages", *CLAUDE_STREAM], env, work)
    deltas = [
        e["event"]["delta"]["text"]
        for e in events
        if e["type"] == "stream_event" and e["event"]["type"] == "content_block_delta"
    ]
    assert "".join(deltas) == events[-1]["result"]


def test_claude_unknown_event(env: dict[str, str], work: Path) -> None:
    code, events, _ = run("claude", ["-p", "scenario:unknown_event", *CLAUDE_STREAM], env, work)
    assert (
        code == 0 and "brand_new_thing" in [e["type"] for e in events] and events[-1]["subtype"] == "success"
    )


def test_claude_permission(env: dict[str, str], work: Path) -> None:
    code, events, _ = run("claude", ["-p", "scenario:permission", *CLAUDE_STREAM], env, work)
    assert code == 0 and events[-1]["permission_denials"][0]["tool_name"] == "Bash"
    for behavior in ("allow", "deny"):
        live = Live(
            "claude",
            ["-p", "scenario:permission", "--permission-prompt-tool", "stdio", *CLAUDE_STREAM],
            env,
            work,
            stdin=subprocess.PIPE,
        )
        try:
            request = live.wait_for(lambda e: e["type"] == "control_request")
            assert (
                request["request"]["subtype"] == "can_use_tool" and request["request"]["tool_name"] == "Bash"
            )
            answer = (
                {"behavior": behavior, "updatedInput": request["request"]["input"]}
                if behavior == "allow"
                else {"behavior": "deny", "message": "not today"}
            )
            live.send(
                {
                    "type": "control_response",
                    "response": {
                        "subtype": "success",
                        "request_id": request["request_id"],
                        "response": answer,
                    },
                }
            )
            assert live.finish() == 0
            assert bool(live.events[-1]["permission_denials"]) is (behavior == "deny")
        finally:
            live.kill()


def test_claude_sigterm_and_sigint(env: dict[str, str], work: Path) -> None:
    live = Live("claude", ["-p", "scenario:slow", *CLAUDE_STREAM], env, work)
    try:
        live.wait_for(lambda e: e["type"] == "user")
        pid = child_pid(env)
        assert pid_alive(pid)
        os.kill(live.proc.pid, signal.SIGINT)  # ignored until the tool loop ends
        count = len(live.events)
        live.wait_for(lambda e: e["type"] == "user")
        assert live.proc.poll() is None and len(live.events) > count
        os.kill(live.proc.pid, signal.SIGTERM)
        assert live.finish() == 143
        assert live.events[-1]["type"] != "result"
        assert wait_dead(pid)
    finally:
        live.kill()


def test_claude_stream_input_interrupt(env: dict[str, str], work: Path) -> None:
    args = ["--input-format", "stream-json", *CLAUDE_STREAM]
    live = Live("claude", args, env, work, stdin=subprocess.PIPE)
    try:
        live.send({"type": "user", "message": {"role": "user", "content": "go scenario:slow"}})
        live.wait_for(lambda e: e["type"] == "user")
        live.send({"type": "control_request", "request_id": "r1", "request": {"subtype": "interrupt"}})
        result = live.wait_for(lambda e: e["type"] == "result")
        assert (
            result["subtype"] == "error_during_execution" and result["terminal_reason"] == "aborted_by_user"
        )
        assert any(
            e["type"] == "control_response" and e["response"]["request_id"] == "r1" for e in live.events
        )
        assert wait_dead(child_pid(env))
        live.send(
            {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": "again"}]}}
        )
        result = live.wait_for(lambda e: e["type"] == "result")
        assert result["subtype"] == "success" and "turn 2 of session" in result["result"]
        assert live.proc.stdin is not None
        live.proc.stdin.close()
        assert live.finish() == 0
    finally:
        live.kill()


# ---- gemini --------------------------------------------------------------------------------------------


def test_gemini_trust_and_plain(env: dict[str, str], work: Path) -> None:
    code, events, stderr = run("gemini", ["-p", "hi", "--output-format", "stream-json"], env, work)
    assert (code, events) == (55, []) and "trusted" in stderr
    code, events, _ = run(
        "gemini",
        ["-p", "hi", "--output-format", "stream-json"],
        {**env, "GEMINI_CLI_TRUST_WORKSPACE": "true"},
        work,
    )
    assert code == 0
    assert events[0]["type"] == "init" and events[0]["session_id"] and all("timestamp" in e for e in events)
    chunks = [e for e in events if e["type"] == "message" and e["role"] == "assistant"]
    assert chunks and all(e["delta"] is True for e in chunks)
    result = events[-1]
    assert result["type"] == "result" and result["status"] == "success"
    assert {
        "total_tokens",
        "input_tokens",
        "output_tokens",
        "cached",
        "duration_ms",
        "tool_calls",
        "models",
    } <= set(result["stats"])


def test_gemini_tools_resume_and_stdin(env: dict[str, str], work: Path) -> None:
    code, events, _ = run("gemini", ["-p", "scenario:tools", "--yolo", *GEMINI_STREAM], env, work)
    assert code == 0
    uses = [e for e in events if e["type"] == "tool_use"]
    results = [e for e in events if e["type"] == "tool_result"]
    assert [u["tool_id"] for u in uses] == [r["tool_id"] for r in results]
    assert {r["status"] for r in results} == {"success"} and events[-1]["stats"]["tool_calls"] == 3
    assert wait_dead(child_pid(env))
    sid = events[0]["session_id"]
    code, events, _ = run("gemini", ["--resume", sid, "-p", "more", *GEMINI_STREAM], env, work)
    assert code == 0 and events[0]["session_id"] == sid
    assert f"turn 2 of session {sid}" in "".join(
        e.get("content", "") for e in events if e["type"] == "message"
    )
    code, _, stderr = run("gemini", ["--resume", "nope", "-p", "x", *GEMINI_STREAM], env, work)
    assert code == 42 and "nope" in stderr
    proc = subprocess.run(
        [BIN / "gemini", "-p", "and more", *GEMINI_STREAM],
        input=b"piped scenario:max_turns",
        capture_output=True,
        env=env,
        cwd=work,
    )
    assert proc.returncode == 53
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[1]["content"] == "piped scenario:max_turns\n\nand more"
    assert events[-1]["status"] == "error" and events[-1]["error"]["type"] == "FatalTurnLimitedError"


def test_gemini_error_and_permission(env: dict[str, str], work: Path) -> None:
    code, events, _ = run("gemini", ["-p", "scenario:error", *GEMINI_STREAM], env, work)
    assert code == 1 and events[-1]["status"] == "error" and events[-2]["type"] == "error"
    code, events, _ = run("gemini", ["-p", "scenario:permission", *GEMINI_STREAM], env, work)
    denied = next(e for e in events if e["type"] == "tool_result")
    assert code == 0 and denied["status"] == "error" and "denied by policy" in denied["error"]["message"]


def test_gemini_sigterm(env: dict[str, str], work: Path) -> None:
    live = Live("gemini", ["-p", "scenario:slow", *GEMINI_STREAM], env, work)
    try:
        live.wait_for(lambda e: e["type"] == "tool_result")
        pid = child_pid(env)
        os.kill(live.proc.pid, signal.SIGTERM)
        assert live.finish() == 0
        assert "result" not in [e["type"] for e in live.events]
        assert wait_dead(pid)
    finally:
        live.kill()


# ---- codex ---------------------------------------------------------------------------------------------


def test_codex_plain_tools_and_resume(env: dict[str, str], work: Path) -> None:
    code, _, stderr = run("codex", ["exec", "--json", "hi"], env, work)
    assert code == 1 and "--skip-git-repo-check" in stderr
    args = ["exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write"]
    code, events, _ = run("codex", [*args, "scenario:tools"], env, work)
    assert code == 0
    assert [e["type"] for e in events[:2]] == ["thread.started", "turn.started"]
    tid = events[0]["thread_id"]
    kinds = {(e["type"], e["item"]["type"]) for e in events if e["type"].startswith("item.")}
    assert {
        ("item.started", "command_execution"),
        ("item.completed", "command_execution"),
        ("item.started", "file_change"),
        ("item.completed", "file_change"),
    } <= kinds
    assert wait_dead(child_pid(env))
    first_usage = events[-1]["usage"]
    assert events[-1]["type"] == "turn.completed"
    code, events, _ = run(
        "codex", ["exec", "--json", "--skip-git-repo-check", "resume", tid, "next"], env, work
    )
    assert code == 0 and events[0] == {"type": "thread.started", "thread_id": tid}
    usage = events[-1]["usage"]
    assert all(usage[k] > first_usage[k] for k in ("input_tokens", "cached_input_tokens", "output_tokens"))
    assert f"turn 2 of session {tid}" in events[-2]["item"]["text"]
    code, events, _ = run(
        "codex",
        ["exec", "--json", "--skip-git-repo-check", "resume", "0199a213-81c0-7800-8aa1-bbab2a035a53", "x"],
        env,
        work,
    )
    assert code == 1 and not events


def test_codex_failures(env: dict[str, str], work: Path) -> None:
    args = ["exec", "--json", "--skip-git-repo-check"]
    for scenario in ("max_turns", "error"):
        code, events, _ = run("codex", [*args, f"scenario:{scenario}"], env, work)
        assert code == 1 and events[-1]["type"] == "turn.failed" and events[-1]["error"]["message"]
    code, events, _ = run("codex", [*args, "scenario:permission"], env, work)
    command = next(
        e["item"]
        for e in events
        if e["type"] == "item.completed" and e["item"]["type"] == "command_execution"
    )
    assert code == 0 and command["status"] == "failed" and command["exit_code"] == 1


def test_codex_signals(env: dict[str, str], work: Path) -> None:
    args = ["exec", "--json", "--skip-git-repo-check", "scenario:slow"]
    live = Live("codex", args, env, work)
    try:
        live.wait_for(lambda e: e["type"] == "item.completed")
        pid = child_pid(env)
        os.kill(live.proc.pid, signal.SIGINT)
        assert live.finish() == 130
        assert not {"turn.completed", "turn.failed"} & {e["type"] for e in live.events}
        assert wait_dead(pid)
    finally:
        live.kill()
    # SIGTERM to the process alone: default action, and the tool's child is orphaned (so a wrapper
    # must signal the whole process group)
    live = Live("codex", args, env, work)
    try:
        live.wait_for(lambda e: e["type"] == "item.completed")
        pid = child_pid(env)
        os.kill(live.proc.pid, signal.SIGTERM)
        assert live.finish() == -signal.SIGTERM
        assert pid_alive(pid)
    finally:
        live.kill()
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
