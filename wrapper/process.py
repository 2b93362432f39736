"""A command's process: its own process group, stdout and stderr read line by line, stdin kept for
the CLIs that take control messages there, and a cancel that escalates (the CLI's own interrupt,
then SIGINT, SIGTERM and SIGKILL to the whole group). Whatever is left in the group when the
command's process ends is killed: no orphans.

While the group lives it is recorded in the agent's state dir (AgentState.record_group). A wrapper
that dies mid-command (SIGKILL, a crash, a reboot of the wrapper alone) leaves its record behind, and
the next wrapper to start on that state dir ends the group before it takes new work
(end_left_over_groups): a restart never leaves a ghost CLI running."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable

import psutil

from wrapper.adapters.base import Invocation
from wrapper.state import AgentState, GroupRecord

log = logging.getLogger("onsembl.agent")

LineSink = Callable[[str], None]

#: Seconds to wait after each step of a cancel: the CLI's interrupt, SIGINT, SIGTERM.
ESCALATION_S = (3.0, 2.0, 3.0)
#: Longest line kept whole; longer ones are split (the protocol limits message size).
MAX_LINE = 64 * 1024
#: Output read ahead of the adapter, at most: the CLI never waits on a full pipe while the wrapper
#: turns earlier lines into messages (the wrapper must not slow the agent down).
READ_AHEAD = 32 * 1024 * 1024
#: The pipes' kernel buffer (Linux; 64 KiB by default): room for a burst between two reads.
PIPE_BYTES = 1024 * 1024
#: Lines handled between two yields to the event loop, which then reads the pipes again.
LINES_PER_YIELD = 64
STDERR_TAIL = 20
#: After the process exits, how long its output may take to drain before the group is swept.
DRAIN_S = 1.0
#: After the sweep's SIGKILL, how long the group may take to be gone before its record is dropped
#: (a group still there keeps its record: the next start ends it).
SWEEP_S = 2.0
#: How often the orphans of a running command that ended are reaped.
REAP_INTERVAL_S = 5.0
#: prctl(2) option: orphans of descendants are reparented to this process, not to init.
PR_SET_CHILD_SUBREAPER = 36
#: A group left by a previous run: seconds between its SIGTERM and its SIGKILL.
LEFT_OVER_GRACE_S = 3.0
#: Two start times of one process, as psutil reads them in two processes, differ by less than this
#: (they come from the same clock ticks); a recycled pid's start time differs by more.
SAME_START_S = 0.05


class CommandProcess:
    def __init__(
        self,
        invocation: Invocation,
        cwd: str | None,
        state: AgentState | None = None,
        command_id: str = "",
    ) -> None:
        self.invocation = invocation
        self.cwd = cwd
        #: Where the running group is recorded (none: not recorded).
        self.state = state
        self.command_id = command_id
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.started = asyncio.Event()

    @property
    def argv(self) -> list[str]:
        return self.invocation.argv

    async def run(self, on_stdout: LineSink, on_stderr: LineSink) -> int:
        env = dict(os.environ)
        env.update(self.invocation.env)
        stdout_read, stdout_write = _pipe()
        stderr_read, stderr_write = _pipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.invocation.argv,
                stdin=asyncio.subprocess.PIPE
                if self.invocation.stdin is not None
                else asyncio.subprocess.DEVNULL,
                stdout=stdout_write,
                stderr=stderr_write,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            os.close(stdout_read)
            os.close(stderr_read)
            raise
        finally:
            os.close(stdout_write)
            os.close(stderr_write)
        recorded = self._record()
        try:
            return await self._follow(on_stdout, on_stderr, stdout_read, stderr_read)
        finally:
            # Still running (this task was cancelled before the command ended): the record stays, for
            # the cancel that follows or for the next start of the wrapper.
            if recorded and not (group_has_members(self.proc.pid) and group_alive(self.proc.pid)):
                assert self.state is not None
                self.state.forget_group(self.command_id)

    async def _follow(
        self, on_stdout: LineSink, on_stderr: LineSink, stdout_read: int, stderr_read: int
    ) -> int:
        assert self.proc is not None
        stdout = await _reader(stdout_read)
        stderr = await _reader(stderr_read)
        self.started.set()
        if self.invocation.stdin is not None:
            await self.write(self.invocation.stdin)
            if not self.invocation.keep_stdin_open:
                self.close_stdin()

        def stderr_line(line: str) -> None:
            self.stderr_tail.append(line)
            on_stderr(line)

        pumps = asyncio.gather(_pump(stdout, on_stdout), _pump(stderr, stderr_line))
        reaper = asyncio.create_task(_reap_while_running(self.proc.pid), name=f"reap-{self.proc.pid}")
        try:
            code = await self.proc.wait()
        finally:
            reaper.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(pumps), DRAIN_S)
        except TimeoutError:
            pass
        # Children that outlived the command (or hold its pipes open) go with it.
        self._signal_group(signal.SIGKILL)
        await pumps
        # A killed process is gone a moment later (no event says when). The group's orphans are this
        # wrapper's children (``become_subreaper``) and reaped here, so the group soon has no member
        # at all: no look through the process table each turn, which cost 50 ms a turn with 1,700
        # processes (200 agents' commands) and starved the hub of CPU in an emergency stop.
        deadline = time.monotonic() + SWEEP_S
        while time.monotonic() < deadline:
            if not group_has_members(self.proc.pid):
                break
            await asyncio.sleep(0.02)
        return code

    def _record(self) -> bool:
        """Record the new group in the state dir; whether it was."""
        if self.state is None or self.proc is None:
            return False
        pid = self.proc.pid
        try:
            # Not reaped yet (nobody waited for it): the pid is still this process's.
            create_time = psutil.Process(pid).create_time()
        except psutil.Error:
            return False
        owner_pid, owner_create_time = own_identity()
        self.state.record_group(
            GroupRecord(
                command_id=self.command_id,
                pgid=pid,  # start_new_session: the process leads its own session and group
                pid=pid,
                create_time=create_time,
                owner_pid=owner_pid,
                owner_create_time=owner_create_time,
            )
        )
        return True

    async def write(self, text: str) -> bool:
        if self.proc is None or self.proc.stdin is None or self.proc.stdin.is_closing():
            return False
        try:
            self.proc.stdin.write(text.encode())
            await self.proc.stdin.drain()
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def close_stdin(self) -> None:
        if self.proc is not None and self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def _exited_within(self, seconds: float) -> bool:
        assert self.proc is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), seconds)
            return True
        except TimeoutError:
            return False

    async def halt(self) -> None:
        """SIGKILL the whole group at once: the emergency stop, which must not wait on a CLI's
        goodbye. (What ``run`` does after the exit, the sweep and the wait for the group, follows.)"""
        await self.started.wait()
        if self.proc is not None:
            self._signal_group(signal.SIGKILL)

    async def cancel(self, interrupt_line: str | None = None) -> None:
        """The CLI's own interrupt, then SIGINT, SIGTERM, and SIGKILL of the group, until it ends."""
        await self.started.wait()
        if self.proc is None or self.proc.returncode is not None:
            return
        if interrupt_line is not None and await self.write(interrupt_line):
            if await self._exited_within(ESCALATION_S[0]):
                return
        for sig, wait in ((signal.SIGINT, ESCALATION_S[1]), (signal.SIGTERM, ESCALATION_S[2])):
            self._signal_group(sig)
            if await self._exited_within(wait):
                return
        self._signal_group(signal.SIGKILL)


# ---- groups left by a previous run ------------------------------------------------------------------


def own_identity() -> tuple[int, float]:
    """This process's pid and start time."""
    return os.getpid(), psutil.Process().create_time()


def _same_start(a: float, b: float) -> bool:
    return abs(a - b) < SAME_START_S


def group_members(pgid: int) -> list[psutil.Process]:
    """The processes of group ``pgid`` that still run (zombies are ended, only not yet reaped)."""
    members: list[psutil.Process] = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


async def _reap_while_running(pgid: int) -> None:
    """The command's orphans that end while it runs are reaped now and then, so that a long command
    that starts and leaves many processes does not pile up zombies here."""
    while True:
        await asyncio.sleep(REAP_INTERVAL_S)
        reap_group(pgid)


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans (Linux), so that the processes a
    command leaves when its shell dies are reaped here, at once, not by init whenever it gets to
    them (every 1.5 s on some container inits): their group is then gone when its last process is.
    Whether it took."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def reap_group(pgid: int) -> None:
    """Reap this process's ended children in group ``pgid`` (orphans of a command). The group's
    leader is asyncio's to reap (its child watcher waits for it): should it be the one waiting, it
    is left, and so is the rest until the next call."""
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    while True:
        try:
            waiting = os.waitid(os.P_PGID, pgid, flags)
        except ChildProcessError:
            return
        if waiting is None or waiting.si_pid == pgid:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(waiting.si_pid, os.WNOHANG)


def group_has_members(pgid: int) -> bool:
    """Whether group ``pgid`` has any process, zombies included (after reaping ours): cheap, one
    signal 0, no look through the process table."""
    reap_group(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def group_alive(pgid: int) -> bool:
    """Whether group ``pgid`` has a process that still runs."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # there, but not ours to signal; look closer
    return bool(group_members(pgid))


def _is_the_recorded_group(record: GroupRecord) -> bool:
    """Whether group ``record.pgid`` is still the one the record names, not a group that got its
    number later. The leader, when it still exists, must have the recorded start time. Without it,
    every member must be younger than the leader was and in the session the leader opened (the
    system does not reuse a pgid while its group has members, so these are the leader's own)."""
    try:
        leader = psutil.Process(record.pid)
        return _same_start(leader.create_time(), record.create_time)
    except psutil.NoSuchProcess:
        pass
    except psutil.Error:
        return False
    members = group_members(record.pgid)
    if not members:
        return False
    try:
        return all(
            m.create_time() >= record.create_time - SAME_START_S and os.getsid(m.pid) == record.pgid
            for m in members
        )
    except (OSError, psutil.Error):
        return False


def end_left_over_groups(state: AgentState, grace_s: float = LEFT_OVER_GRACE_S) -> list[GroupRecord]:
    """End the process groups a previous run of this agent's wrapper left running (its records in
    the state dir): SIGTERM to each group, up to ``grace_s`` seconds to end, then SIGKILL. A group
    whose number now belongs to other processes (recycled pid, another start time) is left alone,
    and so are the records of a wrapper that still runs. Blocking: call it before taking work.
    Returns the records of the groups it ended."""
    me_pid, me_start = own_identity()
    to_end: list[GroupRecord] = []
    for record in state.group_records():
        if record.owner_pid == me_pid and _same_start(record.owner_create_time, me_start):
            continue  # this wrapper's own running command
        try:
            owner_alive = _same_start(
                psutil.Process(record.owner_pid).create_time(), record.owner_create_time
            )
        except psutil.Error:
            owner_alive = False
        if owner_alive:
            log.warning(
                "command %s belongs to another wrapper (pid %d) that runs on this state dir; left alone",
                record.command_id,
                record.owner_pid,
            )
            continue
        if group_alive(record.pgid) and _is_the_recorded_group(record):
            to_end.append(record)
        else:
            log.debug("process group %d of command %s has already ended", record.pgid, record.command_id)
            state.forget_group(record.command_id)
    if not to_end:
        return []
    _signal_groups(to_end, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(group_alive(r.pgid) for r in to_end) and time.monotonic() < deadline:
        time.sleep(0.05)
    stubborn = [r for r in to_end if group_alive(r.pgid)]
    if stubborn:
        _signal_groups(stubborn, signal.SIGKILL)
        deadline = time.monotonic() + SWEEP_S
        while any(group_alive(r.pgid) for r in stubborn) and time.monotonic() < deadline:
            time.sleep(0.02)
    for record in to_end:
        if group_alive(record.pgid):
            log.error(
                "process group %d of command %s left by a previous run survives SIGKILL",
                record.pgid,
                record.command_id,
            )
            continue
        log.warning(
            "ended process group %d of command %s left by a previous run%s",
            record.pgid,
            record.command_id,
            " (SIGKILL)" if record in stubborn else "",
        )
        state.forget_group(record.command_id)
    return to_end


def _signal_groups(records: list[GroupRecord], sig: signal.Signals) -> None:
    for record in records:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pgid, sig)


def _pipe() -> tuple[int, int]:
    """A pipe for the command's output, its buffer enlarged where the system allows."""
    read_end, write_end = os.pipe()
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        # Past /proc/sys/fs/pipe-max-size (1 MiB by default) the call fails: the pipe keeps 64 KiB.
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, set_size, PIPE_BYTES)
    return read_end, write_end


async def _reader(fd: int) -> asyncio.StreamReader:
    """An asyncio reader on ``fd`` that reads ahead up to READ_AHEAD bytes."""
    loop = asyncio.get_running_loop()
    # The transport stops reading at twice the limit; lines over MAX_LINE are cut below.
    reader = asyncio.StreamReader(limit=READ_AHEAD // 2, loop=loop)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", 0)
    )
    return reader


async def _pump(stream: asyncio.StreamReader, sink: LineSink) -> None:
    handled = 0
    while True:
        try:
            line = await stream.readline()
        except (ValueError, asyncio.LimitOverrunError):
            # A line longer than the read-ahead: take what is there.
            line = await stream.read(MAX_LINE)
        if not line:
            return
        for start in range(0, len(line), MAX_LINE):
            sink(line[start : start + MAX_LINE].decode(errors="replace"))
        handled += 1
        if handled % LINES_PER_YIELD == 0:
            # readline() returns at once while lines are buffered: let the loop read the pipes.
            await asyncio.sleep(0)
