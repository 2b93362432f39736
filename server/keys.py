"""Redis key names, in one place. Everything Onsembl keeps in Redis starts with PREFIX."""

from __future__ import annotations

PREFIX = "onsembl:"

#: The event stream every hub appends to and reads from (Redis stream).
EVENTS_STREAM = PREFIX + "events"
#: Consumer group that writes the stream to the database, one consumer per hub.
STORE_GROUP = "store"
#: RQ queue that holds command executions.
COMMAND_QUEUE = "onsembl-commands"
#: Monotonic counter that orders queued executions.
ORDER_SEQ = PREFIX + "order-seq"
#: Bumped whenever a constraint profile is created: hubs cache the default profile's limits by it.
PROFILES_VERSION = PREFIX + "profiles:version"
#: Agents currently connected to some hub: ZSET agent id -> last seen (ms).
ONLINE_AGENTS = PREFIX + "agents:online"
PAUSED_AGENTS = PREFIX + "agents:paused"
STOPPED_AGENTS = PREFIX + "agents:stopped"
#: Executions whose supervising job is running: ZSET execution id -> its last beat (ms).
SUPERVISED = PREFIX + "supervised"
#: Live hubs: ZSET hub id -> last beat (ms).
HUBS = PREFIX + "hubs"


def agent(agent_id: str) -> str:
    """Live state of one agent (hash)."""
    return f"{PREFIX}agent:{agent_id}"


def agent_channel(agent_id: str) -> str:
    """Pub/sub channel the hub holding the agent's socket listens on."""
    return f"{PREFIX}to-agent:{agent_id}"


def agent_pending(agent_id: str) -> str:
    """Executions parked until the agent is back online or resumed (ZSET by order score)."""
    return f"{PREFIX}pending:{agent_id}"


def agent_executions(agent_id: str) -> str:
    """Every unfinished execution of the agent (SET), for queue views and emergency stop."""
    return f"{PREFIX}agent-executions:{agent_id}"


def execution(execution_id: str) -> str:
    """What to run and where it stands (hash)."""
    return f"{PREFIX}exec:{execution_id}"


def execution_signals(execution_id: str) -> str:
    """Signals to the job that supervises the execution: ack, complete, cancel (list)."""
    return f"{PREFIX}exec:{execution_id}:signals"


def execution_index(command_id: str, agent_id: str) -> str:
    """(command id, agent id) -> execution id, as agents only know the command id."""
    return f"{PREFIX}exec-index:{command_id}:{agent_id}"


def rate_limit_key(agent_id: str) -> str:
    """RQ RateLimit key: one execution at a time per agent, across every worker."""
    return f"onsembl-agent-{agent_id}"
