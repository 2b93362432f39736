"""Each adapter's mapping from its CLI's documented event stream to terminal output, trace tree,
tokens, session and outcome, fed line by line (the end-to-end runs against fake CLIs are in
test_agents.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shared.enums import CompletionStatus, EndReason, StreamType, TraceType
from wrapper.adapters import ClaudeAdapter, CodexAdapter, GeminiAdapter


@dataclass
class Recorder:
    out: list[tuple[StreamType, str]] = field(default_factory=list)
    traces: list[dict[str, Any]] = field(default_factory=list)
    token_totals: list[int] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    inputs: list[tuple[str, str, Any, bool]] = field(default_factory=list)
    turns_finished: int = 0

    def output(self, stream: StreamType, text: str) -> None:
        self.out.append((stream, text))

    def trace(self, trace_id: str, type: TraceType, name: str, **fields: Any) -> None:
        self.traces.append({"id": trace_id, "type": type, "name": name, **fields})

    def tokens(self, total: int) -> None:
        self.token_totals.append(total)

    def cost(self, usd: float) -> None:
        self.costs.append(usd)

    def session(self, session_id: str) -> None:
        self.sessions.append(session_id)

    def version(self, version: str) -> None:
        pass

    def answer(self, text: str) -> None:
        self.answers.append(text)

    def turn_finished(self) -> None:
        self.turns_finished += 1

    def needs_input(self, request_id: str, tool_name: str, tool_input: Any, can_answer: bool = True) -> None:
        self.inputs.append((request_id, tool_name, tool_input, can_answer))

    def tree(self) -> dict[str, str | None]:
        """trace id -> parent id, last write wins (as the hub upserts)."""
        parents: dict[str, str | None] = {}
        for t in self.traces:
            if t.get("parent_id") is not None or t["id"] not in parents:
                parents[t["id"]] = t.get("parent_id")
        return parents

    def text(self, stream: StreamType = StreamType.STDOUT) -> str:
        return "".join(t for s, t in self.out if s is stream)


def feed(parser: Any, events: list[dict[str, Any]]) -> None:
    for event in events:
        parser.feed(json.dumps(event) + "\n")


CLAUDE_SUBAGENT = [
    {
        "type": "system",
        "subtype": "init",
        "session_id": "s-1",
        "model": "claude-x",
        "claude_code_version": "2.1.0",
    },
    {
        "type": "assistant",
        "session_id": "s-1",
        "parent_tool_use_id": None,
        "message": {
            "id": "m1",
            "model": "claude-x",
            "content": [
                {"type": "text", "text": "Let me delegate."},
                {"type": "tool_use", "id": "toolu_task", "name": "Task", "input": {"prompt": "look"}},
            ],
            "usage": {"input_tokens": 100, "output_tokens": 20},
        },
    },
    {
        "type": "assistant",
        "session_id": "s-1",
        "parent_tool_use_id": "toolu_task",
        "message": {
            "id": "m2",
            "model": "claude-x",
            "content": [
                {"type": "tool_use", "id": "toolu_read", "name": "Read", "input": {"file_path": "a.py"}}
            ],
            "usage": {"input_tokens": 50, "output_tokens": 10},
        },
    },
    {
        "type": "user",
        "parent_tool_use_id": "toolu_task",
        "message": {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_read", "content": "print(1)", "is_error": False}
            ],
        },
    },
    {
        "type": "user",
        "parent_tool_use_id": None,
        "message": {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_task", "content": "found it", "is_error": False}
            ],
        },
    },
    {
        "type": "assistant",
        "session_id": "s-1",
        "parent_tool_use_id": None,
        "message": {
            "id": "m3",
            "model": "claude-x",
            "content": [{"type": "text", "text": "Done: a.py prints 1."}],
            "usage": {"input_tokens": 200, "output_tokens": 30},
        },
    },
    {"type": "brand_new_thing", "x": 1},
    {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "Done: a.py prints 1.",
        "session_id": "s-1",
        "total_cost_usd": 0.0123,
        "num_turns": 3,
        "usage": {"input_tokens": 350, "output_tokens": 60, "cache_creation_input_tokens": 0},
    },
]


def test_claude_mapping_trace_tree_tokens_and_session() -> None:
    recorder = Recorder()
    adapter = ClaudeAdapter()
    parser = adapter.parser(recorder)
    feed(parser, CLAUDE_SUBAGENT)
    outcome = parser.finish(0, [], None)
    assert outcome.status is CompletionStatus.COMPLETED and outcome.reason is EndReason.FINISHED
    assert recorder.sessions[0] == "s-1"
    assert "Let me delegate.\n" in recorder.text() and "Done: a.py prints 1.\n" in recorder.text()
    tree = recorder.tree()
    assert tree["toolu_task"] == "m1"  # the call under its message
    assert tree["m2"] == "toolu_task"  # the subagent's turn under the Task call
    assert tree["toolu_read"] == "m2"
    assert tree["toolu_read:result"] == "toolu_read"  # a result under its call
    assert tree["toolu_task:result"] == "toolu_task"
    raw = [t for t in recorder.traces if t["name"].startswith("unknown event")]
    assert raw and raw[0]["content"] == {"type": "brand_new_thing", "x": 1}
    # Per-message usage as it streams, then the result's totals replace it.
    assert recorder.token_totals[:3] == [120, 180, 410]
    assert recorder.token_totals[-1] == 410
    assert recorder.costs == [0.0123]
    assert recorder.answers == ["Done: a.py prints 1."]
    assert recorder.turns_finished == 1


def test_json_lines_events_escapes_and_plain_text() -> None:
    """Each line is an event, whichever parser takes it: one with a lone surrogate escape (which
    pydantic's parser refuses and json's takes) too; a line that is not JSON is output."""
    recorder = Recorder()
    parser = ClaudeAdapter().parser(recorder)
    parser.feed(
        '{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"a \\ud800 b"}]}}\n'
    )
    parser.feed("Loading plugins...\n")
    parser.feed("\n")
    assert [t["id"] for t in recorder.traces] == ["m1"]
    assert recorder.out == [(StreamType.STDOUT, "a \ud800 b\n"), (StreamType.STDOUT, "Loading plugins...\n")]


def test_claude_invocation_and_control_lines() -> None:
    adapter = ClaudeAdapter(["--model", "sonnet"])
    first = adapter.invocation("hello", None)
    assert first.argv[:3] == ["claude", "-p", "--input-format"]
    assert "--verbose" in first.argv and "--resume" not in first.argv
    assert ["--permission-prompt-tool", "stdio"] == first.argv[
        first.argv.index("--permission-prompt-tool") :
    ][:2]
    assert json.loads(first.stdin or "") == {"type": "user", "message": {"role": "user", "content": "hello"}}
    assert first.keep_stdin_open
    again = adapter.invocation("more", "s-1")
    assert again.argv[again.argv.index("--resume") + 1] == "s-1"
    assert again.argv[-2:] == ["--model", "sonnet"]
    interrupt = json.loads(adapter.interrupt_line() or "")
    assert interrupt["type"] == "control_request" and interrupt["request"] == {"subtype": "interrupt"}
    reply = json.loads(adapter.permission_reply("r1", True, "", {"command": "ls"}) or "")
    assert reply["response"]["request_id"] == "r1"
    assert reply["response"]["response"] == {"behavior": "allow", "updatedInput": {"command": "ls"}}
    deny = json.loads(adapter.permission_reply("r2", False, "no") or "")
    assert deny["response"]["response"] == {"behavior": "deny", "message": "no"}


def test_claude_errors_interrupt_and_permission_request() -> None:
    for result, status, reason in [
        (
            {"subtype": "error_max_turns", "is_error": True, "num_turns": 5},
            CompletionStatus.FAILED,
            EndReason.ERROR,
        ),
        (
            {"subtype": "error_during_execution", "is_error": True, "terminal_reason": "aborted_by_user"},
            CompletionStatus.CANCELLED,
            EndReason.INTERRUPTED,
        ),
        (
            {"subtype": "error_max_budget_usd", "is_error": True},
            CompletionStatus.CANCELLED,
            EndReason.TOKEN_BUDGET,
        ),
    ]:
        recorder = Recorder()
        parser = ClaudeAdapter().parser(recorder)
        feed(parser, [{"type": "result", **result}])
        outcome = parser.finish(1, [], None)
        assert (outcome.status, outcome.reason) == (status, reason), result
    recorder = Recorder()
    parser = ClaudeAdapter().parser(recorder)
    feed(
        parser,
        [
            {
                "type": "control_request",
                "request_id": "req-9",
                "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "rm x"}},
            }
        ],
    )
    assert recorder.inputs == [("req-9", "Bash", {"command": "rm x"}, True)]
    # A crash: no result, exit 3, the stderr tail in the error.
    crashed = ClaudeAdapter().parser(Recorder()).finish(3, ["boom\n", "Traceback: x\n"], None)
    assert crashed.status is CompletionStatus.FAILED and "exited with code 3" in (crashed.error or "")
    assert "Traceback: x" in (crashed.error or "")


def test_gemini_mapping_and_cancel_without_result() -> None:
    recorder = Recorder()
    adapter = GeminiAdapter()
    parser = adapter.parser(recorder)
    feed(
        parser,
        [
            {"type": "init", "timestamp": "t", "session_id": "g-1", "model": "gemini-2.5-pro"},
            {"type": "message", "role": "user", "content": "hi"},
            {"type": "message", "role": "assistant", "content": "Looking", "delta": True},
            {"type": "tool_use", "tool_name": "read_file", "tool_id": "t1", "parameters": {"path": "a"}},
            {"type": "tool_result", "tool_id": "t1", "status": "success", "output": "x"},
            {
                "type": "tool_use",
                "tool_name": "run_shell_command",
                "tool_id": "t2",
                "parameters": {"command": "rm"},
            },
            {
                "type": "tool_result",
                "tool_id": "t2",
                "status": "error",
                "error": {"type": "policy", "message": "denied by policy"},
            },
            {"type": "message", "role": "assistant", "content": " done.", "delta": True},
            {
                "type": "result",
                "status": "success",
                "stats": {"total_tokens": 321, "input_tokens": 300, "output_tokens": 21},
            },
        ],
    )
    assert parser.finish(0, [], None).status is CompletionStatus.COMPLETED
    assert recorder.sessions == ["g-1"] and recorder.token_totals[-1] == 321
    tree = recorder.tree()
    assert tree["t1:result"] == "t1" and tree["t1"] == "turn-1"
    assert recorder.inputs and recorder.inputs[0][1] == "run_shell_command" and recorder.inputs[0][3] is False
    assert recorder.answers == ["Looking done."]
    # SIGINT/SIGTERM: exit 0 and no result event; the wrapper records the cancel itself.
    cancelled = GeminiAdapter().parser(Recorder()).finish(0, [], EndReason.USER_CANCEL)
    assert cancelled.status is CompletionStatus.CANCELLED and cancelled.reason is EndReason.USER_CANCEL
    untrusted = GeminiAdapter().parser(Recorder()).finish(55, [], None)
    assert untrusted.status is CompletionStatus.FAILED and "trusted" in (untrusted.error or "")
    invocation = adapter.invocation("q", "g-1")
    assert invocation.argv[:3] == ["gemini", "--resume", "g-1"] and "--yolo" in invocation.argv
    assert invocation.stdin is None  # stdin from /dev/null


def test_codex_mapping_replaces_thread_totals() -> None:
    adapter = CodexAdapter()
    assert adapter.invocation("q", None).argv == ["codex", "exec", "--json", "--skip-git-repo-check", "q"]
    first = Recorder()
    parser = adapter.parser(first)
    feed(
        parser,
        [
            {"type": "thread.started", "thread_id": "th-1"},
            {"type": "turn.started"},
            {
                "type": "item.started",
                "item": {"id": "i1", "type": "command_execution", "command": "ls", "status": "in_progress"},
            },
            {
                "type": "item.completed",
                "item": {
                    "id": "i1",
                    "type": "command_execution",
                    "command": "ls",
                    "aggregated_output": "a\n",
                    "exit_code": 0,
                    "status": "completed",
                },
            },
            {"type": "item.completed", "item": {"id": "i2", "type": "agent_message", "text": "There is a."}},
            {
                "type": "turn.completed",
                "usage": {"input_tokens": 1000, "cached_input_tokens": 200, "output_tokens": 100},
            },
        ],
    )
    assert parser.finish(0, [], None).status is CompletionStatus.COMPLETED
    adapter.remember("th-1")
    assert first.token_totals[-1] == 1100 and first.sessions == ["th-1"]
    assert first.tree()["i1"] == "turn-1"
    resume = adapter.invocation("again", "th-1")
    assert resume.argv[-3:] == ["resume", "th-1", "again"]
    second = Recorder()
    parser = adapter.parser(second)
    feed(
        parser,
        [
            {"type": "turn.started"},
            {"type": "turn.completed", "usage": {"input_tokens": 1500, "output_tokens": 150}},
        ],
    )
    # The thread's running total grew from 1100 to 1650: this command used 550.
    assert second.token_totals == [550]
    failed = CodexAdapter().parser(Recorder())
    feed(failed, [{"type": "turn.failed", "error": {"message": "model overloaded"}}])
    outcome = failed.finish(1, [], None)
    assert outcome.status is CompletionStatus.FAILED and outcome.error == "model overloaded"
