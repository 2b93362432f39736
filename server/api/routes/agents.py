from __future__ import annotations

from fastapi import APIRouter

from server import services
from server.api.deps import HubDep, Offset, OptionalLimit, UserDep, errors
from server.errors import not_found
from shared.api import Agent, AgentQueue, ControlRequest, ControlResult, QueueReorder
from shared.enums import ControlAction

router = APIRouter(prefix="/agents", tags=["agents"], responses=errors(400, 401, 403, 404, 409, 422))


@router.get("", response_model=list[Agent])
async def list_agents(
    hub: HubDep, _: UserDep, limit: OptionalLimit = None, offset: Offset = 0
) -> list[Agent]:
    """Every agent, by name; ``limit`` and ``offset`` page the list."""
    return await hub.agents.list(limit, offset)


@router.get("/{agent_id}", response_model=Agent)
async def get_agent(agent_id: str, hub: HubDep, _: UserDep) -> Agent:
    agent = await hub.agents.get(agent_id)
    if agent is None:
        raise not_found("agent", agent_id)
    return agent


@router.get("/{agent_id}/queue", response_model=AgentQueue)
async def get_queue(agent_id: str, hub: HubDep, _: UserDep) -> AgentQueue:
    return await services.agent_queue(hub, agent_id)


@router.patch("/{agent_id}/queue", response_model=AgentQueue)
async def reorder_queue(agent_id: str, body: QueueReorder, hub: HubDep, user: UserDep) -> AgentQueue:
    return await services.reorder_queue(hub, user.subject, agent_id, body.order)


def _control(action: ControlAction):  # type: ignore[no-untyped-def]
    async def endpoint(
        agent_id: str, hub: HubDep, user: UserDep, body: ControlRequest | None = None
    ) -> ControlResult:
        return await services.control_agent(hub, user.subject, agent_id, action, body.reason if body else "")

    endpoint.__name__ = f"{action.value.lower()}_agent"
    return endpoint


for _action in ControlAction:
    router.add_api_route(
        f"/{{agent_id}}/{_action.value.lower()}",
        _control(_action),
        methods=["POST"],
        response_model=ControlResult,
        summary=f"{_action.value.capitalize()} an agent",
    )
