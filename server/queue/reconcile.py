"""What an agent says it runs, against what the hub believes runs there.

On AGENT_CONNECT the wrapper lists its ``activeCommands``: the commands it runs or waits to run,
and those it finished recently (whose results may still be on their way). An execution the hub holds
as EXECUTING on that agent and the list does not name was lost with the wrapper's previous life (a
crash, a kill, a reboot): nothing will ever report its end. It is settled at once, FAILED with
reason AGENT_RESTARTED, its supervising job told, and the agent's queue moves on. (Its output up to
the restart is stored already.) A DISPATCHED one is left to its job, which sends the request again
until the agent acknowledges it: the wrapper may never have had it.
"""

from __future__ import annotations

from collections.abc import Collection

import redis

from server.queue import executions, jobs, lifecycle
from server.queue.executions import ExecutionSpec
from shared.enums import EndReason, ExecutionStatus

RESTARTED_ERROR = (
    "the agent restarted and no longer runs this command (its output up to then is kept); "
    "send it again to run it anew"
)


def settle_lost(
    conn: redis.Redis, agent_id: str, active_commands: Collection[str], maxlen: int
) -> list[ExecutionSpec]:
    """End the agent's EXECUTING executions that it does not list. Returns those this call ended."""
    listed = set(active_commands)
    ended: list[ExecutionSpec] = []
    for execution_id in executions.open_executions(conn, agent_id):
        found = executions.load(conn, execution_id)
        if found is None:
            continue
        spec, state = found
        if ExecutionStatus(state["status"]) is not ExecutionStatus.EXECUTING or spec.command_id in listed:
            continue
        if jobs.end_execution(
            conn, spec, ExecutionStatus.FAILED, EndReason.AGENT_RESTARTED, RESTARTED_ERROR, maxlen
        ):
            lifecycle.signal_sync(conn, spec.id, lifecycle.DONE)
            ended.append(spec)
    return ended
