"""A wrapper that dies mid-command leaves no ghost: the next wrapper on the same state dir ends the
process group its previous life left running, before it connects (issue 16). With real processes:
real hubs and ``onsembl-agent`` wrappers, and real process groups for the unit tests."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from shared.enums import CommandType
from shared.protocol import CommandRequestPayload, new_id
from tests.harness import AgentProcess, HubProcess, async_wait_until, start_agent, timeout, wait_until
from wrapper.adapters import ShellAdapter
from wrapper.executor import MAX_ACTIVE_COMMANDS, Executor
from wrapper.health import HealthSampler
from wrapper.outbox import Outbox
from wrapper.process import end_left_over_groups, group_alive, group_members
from wrapper.state import AgentState, GroupRecord


def send(hub: HubProcess, agent_id: str, content: str) -> str:
    with hub.client() as client:
        response = client.post("/commands", json={"content": content, "targetAgents": [agent_id]})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def connections(agent: AgentProcess) -> int:
    return agent.log_path.read_text(errors="replace").count("connected to ")


@contextlib.contextmanager
def killed_afterwards(pgids: list[int]) -> Iterator[None]:
    """Whatever the test's outcome, no process group it made outlives it."""
    try:
        yield
    finally:
        for pgid in pgids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def start_ghost(hub: HubProcess, name: str, token: str, tmp_path: Path) -> tuple[AgentProcess, str, int]:
    """A wrapper running a command whose bash spawns two long sleeps; returns the wrapper, the
    command id and the command's process group once both sleeps run and the hub says EXECUTING."""
    agent = start_agent(hub, name, token=token)
    pgid_file = tmp_path / f"{name}.pgid"
    command_id = send(hub, agent.agent_id, f"echo $$ > {pgid_file}; sleep 300 & sleep 300 & wait")
    with hub.client() as client:
        wait_until(
            lambda: client.get(f"/commands/{command_id}").json()["status"] == "EXECUTING",
            20,
            "the command to be EXECUTING",
        )
    pgid = int(wait_until(lambda: pgid_file.exists() and pgid_file.read_text().strip(), 20, "bash's pid"))
    wait_until(lambda: len(group_members(pgid)) >= 3, 20, "bash and its two sleeps")
    records = AgentState(hub.data_dir / "agents" / name).group_records()
    assert [(r.command_id, r.pgid) for r in records] == [(command_id, pgid)], records
    return agent, command_id, pgid


def settled_and_moved_on(hub: HubProcess, command_id: str, queued_id: str) -> None:
    """The hub settled the lost command FAILED (AGENT_RESTARTED) and the agent's queue moved on: the
    command queued behind it ran on the new wrapper."""
    with hub.client() as client:
        lost = wait_until(
            lambda: (c := client.get(f"/commands/{command_id}").json())["status"] == "FAILED" and c,
            20,
            "the lost command to be settled FAILED",
        )
        assert lost["executions"][0]["endReason"] == "AGENT_RESTARTED", lost
        wait_until(
            lambda: client.get(f"/commands/{queued_id}").json()["status"] == "COMPLETED",
            30,
            "the next command to run",
        )


def kill_wrapper_only(agent: AgentProcess, pgid: int) -> None:
    agent.process.send_signal(signal.SIGKILL)  # the wrapper alone, not its command's group
    agent.process.wait(timeout=timeout(10))
    time.sleep(0.2)  # a moment for anything that would die with the wrapper to do so
    assert len(group_members(pgid)) >= 3, "the command's processes died with the wrapper"


def test_a_sigkilled_wrapper_s_command_is_ended_by_the_next_one(hub: HubProcess, tmp_path: Path) -> None:
    name = "shell-ghost"
    agent_id, token = hub.agent_token(name)
    agent, command_id, pgid = start_ghost(hub, name, token, tmp_path)
    queued_id = send(hub, agent_id, "echo next")
    again: AgentProcess | None = None
    with killed_afterwards([pgid]):
        try:
            kill_wrapper_only(agent, pgid)
            before = connections(agent)
            again = start_agent(hub, name, token=token, wait_online=False)
            wait_until(lambda: not group_alive(pgid), 15, "the old process group to be gone")
            wait_until(lambda: connections(again) > before, 20, "the new wrapper to connect")
            with hub.client() as client:
                wait_until(
                    lambda: client.get(f"/agents/{agent_id}").json()["status"] == "ONLINE",
                    20,
                    "the agent ONLINE again",
                )
            log = again.log_tail()
            ended = f"ended process group {pgid} of command {command_id} left by a previous run"
            assert ended in log, log
            # Ended before the new wrapper took work: before it connected.
            assert log.index(ended) < log.rindex("connected to "), log
            state = AgentState(hub.data_dir / "agents" / name)
            assert command_id not in {r.command_id for r in state.group_records()}
            settled_and_moved_on(hub, command_id, queued_id)
        finally:
            agent.stop()
            if again is not None:
                again.stop()


def test_a_wrapper_restarted_while_the_hub_is_down_ends_the_group_first(
    fresh_hub: HubProcess, tmp_path: Path
) -> None:
    hub = fresh_hub.start()
    name = "shell-ghost-offline"
    agent_id, token = hub.agent_token(name)
    agent, command_id, pgid = start_ghost(hub, name, token, tmp_path)
    queued_id = send(hub, agent_id, "echo next")
    again: AgentProcess | None = None
    with killed_afterwards([pgid]):
        try:
            hub.stop(signal.SIGKILL)
            kill_wrapper_only(agent, pgid)
            before = connections(agent)
            again = start_agent(hub, name, token=token, wait_online=False)
            # No hub to talk to: the group goes all the same.
            wait_until(lambda: not group_alive(pgid), 15, "the old process group to be gone")
            ended = f"ended process group {pgid} of command {command_id} left by a previous run"
            wait_until(lambda: ended in again.log_tail(), 10, "the wrapper to say what it ended")
            hub.start()
            wait_until(lambda: connections(again) > before, 30, "the new wrapper to connect")
            settled_and_moved_on(hub, command_id, queued_id)
        finally:
            agent.stop()
            if again is not None:
                again.stop()


# ---- units: the records and what they may kill ----------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has ended (a wrapper that is no more)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def group() -> Iterator[subprocess.Popen[bytes]]:
    """bash leading its own session and group, with two sleeping children."""
    proc = subprocess.Popen(
        ["bash", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True, stdin=subprocess.DEVNULL
    )
    wait_until(lambda: len(group_members(proc.pid)) >= 3, 10, "bash and its sleeps")
    yield proc
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def record_of(proc: subprocess.Popen[bytes], create_time: float | None = None) -> GroupRecord:
    return GroupRecord(
        command_id=new_id(),
        pgid=proc.pid,
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time() if create_time is None else create_time,
        owner_pid=dead_pid(),
        owner_create_time=1.0,
    )


def test_a_left_over_group_is_ended_and_its_record_cleared(
    group: subprocess.Popen[bytes], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = AgentState(tmp_path)
    record = record_of(group)
    state.record_group(record)
    with caplog.at_level(logging.WARNING, logger="onsembl.agent"):
        assert end_left_over_groups(state, grace_s=timeout(3)) == [record]
    assert not group_alive(group.pid)
    assert state.group_records() == []
    assert f"ended process group {group.pid} of command {record.command_id} left by a previous run" in (
        caplog.text
    )


def test_a_recycled_pid_is_not_killed(group: subprocess.Popen[bytes], tmp_path: Path) -> None:
    """The record's pid and pgid now belong to a process started at another time: left alone."""
    state = AgentState(tmp_path)
    real = psutil.Process(group.pid).create_time()
    for create_time in (real - 60.0, real + 60.0):
        state.record_group(record_of(group, create_time))
        assert end_left_over_groups(state, grace_s=0.5) == []
        assert len(group_members(group.pid)) >= 3 and group.poll() is None
        assert state.group_records() == []


def test_a_group_whose_leader_is_gone_is_found_by_its_members(tmp_path: Path) -> None:
    """The leader exited (and was reaped) but its children still run in its group."""
    leader = subprocess.Popen(
        ["bash", "-c", "sleep 300 & sleep 300 & read"], start_new_session=True, stdin=subprocess.PIPE
    )
    with killed_afterwards([leader.pid]):
        wait_until(lambda: len(group_members(leader.pid)) >= 3, 10, "bash and its sleeps")
        state = AgentState(tmp_path)
        younger = record_of(leader)
        # Processes created before the recorded start cannot be the command's: not killed.
        older = replace(younger, create_time=younger.create_time + 60.0)
        assert leader.stdin is not None
        leader.stdin.close()  # `read` ends: bash exits, the sleeps stay
        leader.wait(timeout=timeout(10))
        assert len(group_members(leader.pid)) == 2
        state.record_group(older)
        assert end_left_over_groups(state, grace_s=0.5) == []
        assert len(group_members(leader.pid)) == 2
        state.record_group(younger)
        assert end_left_over_groups(state, grace_s=timeout(3)) == [younger]
        assert not group_alive(leader.pid)


def test_the_records_of_a_wrapper_that_still_runs_are_left_alone(
    group: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    owner = subprocess.Popen(["sleep", "300"])
    try:
        state = AgentState(tmp_path)
        record = replace(
            record_of(group),
            owner_pid=owner.pid,
            owner_create_time=psutil.Process(owner.pid).create_time(),
        )
        state.record_group(record)
        assert end_left_over_groups(state, grace_s=0.5) == []
        assert group.poll() is None and state.group_records() == [record]
    finally:
        owner.kill()
        owner.wait()


def test_a_group_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    proc = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 300 & wait; wait"], start_new_session=True)
    with killed_afterwards([proc.pid]):
        wait_until(lambda: len(group_members(proc.pid)) >= 2, 10, "bash and its sleep")
        # The sleep inherits the ignored SIGTERM.
        state = AgentState(tmp_path)
        record = record_of(proc)
        state.record_group(record)
        assert end_left_over_groups(state, grace_s=0.3) == [record]
        assert not group_alive(proc.pid)
        proc.wait(timeout=timeout(5))


# ---- the executor: records while running, and what AGENT_CONNECT names -----------------------------


def request(content: str) -> CommandRequestPayload:
    return CommandRequestPayload(command_id=new_id(), content=content, type=CommandType.NATURAL, priority=0)


def executor_at(tmp_path: Path) -> Executor:
    executor = Executor(ShellAdapter(["bash", "-c"]), AgentState(tmp_path), workdir=str(tmp_path))
    executor.bind("agent-1", Outbox(), HealthSampler())
    return executor


async def test_a_running_command_s_group_is_recorded_then_forgotten(tmp_path: Path) -> None:
    executor = executor_at(tmp_path)
    gate = tmp_path / "gate"
    first = request(f"sleep 300 & while [ ! -e {gate} ]; do sleep 0.05; done")
    executor.submit(first)
    try:
        records = await async_wait_until(executor.state.group_records, 10, "the group recorded")
        assert [r.command_id for r in records] == [first.command_id]
        assert records[0].pgid == records[0].pid and records[0].owner_pid == os.getpid()
        assert psutil.Process(records[0].pid).create_time() == pytest.approx(records[0].create_time, abs=0.05)
        # This wrapper's own running command is not a left-over.
        assert end_left_over_groups(executor.state, grace_s=0.1) == []
        gate.touch()
        await async_wait_until(lambda: first.command_id in executor.finished, 10, "the command to end")
        assert executor.state.group_records() == []
        assert not group_alive(records[0].pgid)  # the sleep went with it
    finally:
        await executor.shutdown()


async def test_active_commands_name_the_running_then_the_recently_finished(tmp_path: Path) -> None:
    executor = executor_at(tmp_path)
    try:
        done = request("true")
        executor.submit(done)
        await async_wait_until(lambda: done.command_id in executor.finished, 10, "the first command")
        assert executor.active_commands() == [done.command_id]
        gate = tmp_path / "gate"
        running = request(f"while [ ! -e {gate} ]; do sleep 0.05; done")
        waiting = request("true")
        executor.submit(running)
        executor.submit(waiting)
        await async_wait_until(lambda: running.command_id in executor.running, 10, "the second to run")
        assert executor.active_commands() == [running.command_id, waiting.command_id, done.command_id]
        gate.touch()
        await async_wait_until(lambda: waiting.command_id in executor.finished, 10, "both to end")
        assert executor.active_commands() == [waiting.command_id, running.command_id, done.command_id]
        # Never past the protocol's limit, the newest kept.
        for _ in range(MAX_ACTIVE_COMMANDS + 20):
            executor.finished[new_id()] = executor.finished[done.command_id]
        named = executor.active_commands()
        assert len(named) == MAX_ACTIVE_COMMANDS and named[0] == next(reversed(executor.finished))
        assert done.command_id not in named
    finally:
        await executor.shutdown()


SUBREAPER_SCRIPT = """
import os, signal, subprocess, sys, time
import psutil
from wrapper.process import become_subreaper, group_has_members, group_members

assert become_subreaper()
shell = subprocess.Popen(["bash", "-c", "sleep 30 & sleep 30 & wait"], start_new_session=True)
deadline = time.monotonic() + float(sys.argv[1])
while len(group_members(shell.pid)) < 3:
    assert time.monotonic() < deadline, "bash and its sleeps"
    time.sleep(0.01)
sleeps = [p for p in group_members(shell.pid) if p.pid != shell.pid]
os.kill(shell.pid, signal.SIGKILL)
shell.wait()
# The shell's orphans are this process's children now, not init's.
while any(p.ppid() != os.getpid() for p in sleeps):
    assert time.monotonic() < deadline, "the orphans to be ours"
    time.sleep(0.01)
os.killpg(shell.pid, signal.SIGKILL)
while group_has_members(shell.pid):
    assert time.monotonic() < deadline, "the group to be gone"
    time.sleep(0.01)
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER is Linux's")
def test_the_orphans_of_a_command_are_the_wrappers_to_reap(tmp_path: Path) -> None:
    """Whatever init does with orphans (some container inits reap every 1.5 s), the processes a
    command's shell leaves are the wrapper's children, reaped by it, so their group is gone as soon
    as they are: no look through the process table while waiting for it."""
    done = subprocess.run(
        [sys.executable, "-c", SUBREAPER_SCRIPT, str(timeout(10))],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
