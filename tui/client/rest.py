"""Typed calls to the hub's REST API (``/v1``). Every answer is validated with the models of
``shared.api``; every failure becomes a :class:`HubError` with the hub's own message."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.api import (
    Agent,
    AgentQueue,
    AuditLog,
    Command,
    CommandCreate,
    ConstraintProfile,
    ControlResult,
    EmergencyStopResult,
    Health,
    InputAnswer,
    OutputLine,
    Page,
    Preset,
    PresetCreate,
    QueueReorder,
    Report,
    TraceEventRecord,
)
from shared.enums import ControlAction, ExecutionStatus
from tui.client.auth import TokenSource

M = TypeVar("M", bound=BaseModel)

_AGENTS = TypeAdapter(list[Agent])
_TRACES = TypeAdapter(list[TraceEventRecord])


class HubError(Exception):
    """The hub said no (``status`` > 0) or could not be reached (``status`` 0)."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    @property
    def unreachable(self) -> bool:
        return self.status == 0


class HubApi:
    def __init__(self, base_url: str, tokens: TokenSource, *, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        # uvicorn drops idle connections after 5 s; expire ours first so a request never goes out on
        # a connection the hub is closing at that moment.
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, limits=httpx.Limits(keepalive_expiry=2.0)
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {await self.tokens.token()}"}
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise HubError(f"the hub at {self.base_url} is unreachable ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                message, code = str(body.get("message") or body), str(body.get("error", ""))
            except ValueError:
                message, code = response.text[:200] or response.reason_phrase, ""
            raise HubError(message, response.status_code, code)
        return response

    async def _get(self, path: str, model: type[M], **params: Any) -> M:
        response = await self._request("GET", path, params=_params(params))
        return _validate(model, response)

    # agents ---------------------------------------------------------------------------------------
    async def agents(self) -> list[Agent]:
        response = await self._request("GET", "/v1/agents")
        return _AGENTS.validate_python(response.json())

    async def queue(self, agent_id: str) -> AgentQueue:
        return await self._get(f"/v1/agents/{agent_id}/queue", AgentQueue)

    async def reorder(self, agent_id: str, order: list[str]) -> AgentQueue:
        body = QueueReorder(order=order).wire()
        return _validate(AgentQueue, await self._request("PATCH", f"/v1/agents/{agent_id}/queue", json=body))

    async def control(self, agent_id: str, action: ControlAction, reason: str = "") -> ControlResult:
        path = f"/v1/agents/{agent_id}/{action.value.lower()}"
        return _validate(ControlResult, await self._request("POST", path, json={"reason": reason}))

    # commands -------------------------------------------------------------------------------------
    async def create_command(self, body: CommandCreate) -> Command:
        response = await self._request("POST", "/v1/commands", json=body.wire())
        return _validate(Command, response)

    async def commands(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        q: str | None = None,
        agent_id: str | None = None,
        status: ExecutionStatus | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> Page[Command]:
        params = {
            "limit": limit,
            "offset": offset,
            "q": q,
            "agentId": agent_id,
            "since": since,
            "until": until,
        }
        params["status"] = status.value if status else None
        return await self._get("/v1/commands", Page[Command], **params)

    async def command(self, command_id: str) -> Command:
        return await self._get(f"/v1/commands/{command_id}", Command)

    async def cancel(self, command_id: str, agent_id: str | None = None, reason: str = "") -> Command:
        body = {"reason": reason, "agentId": agent_id}
        return _validate(Command, await self._request("POST", f"/v1/commands/{command_id}/cancel", json=body))

    async def answer_input(self, command_id: str, answer: InputAnswer) -> None:
        await self._request("POST", f"/v1/commands/{command_id}/input", json=answer.wire())

    async def output(
        self,
        command_id: str,
        *,
        agent_id: str | None = None,
        after: int = -1,
        limit: int = 5000,
        offset: int = 0,
    ) -> Page[OutputLine]:
        return await self._get(
            f"/v1/commands/{command_id}/output",
            Page[OutputLine],
            agentId=agent_id,
            after=after,
            limit=limit,
            offset=offset,
        )

    async def traces(self, command_id: str) -> list[TraceEventRecord]:
        response = await self._request("GET", f"/v1/commands/{command_id}/traces")
        return _TRACES.validate_python(response.json())

    async def emergency_stop(self, reason: str = "") -> EmergencyStopResult:
        response = await self._request("POST", "/v1/emergency-stop", json={"reason": reason})
        return _validate(EmergencyStopResult, response)

    # presets --------------------------------------------------------------------------------------
    async def presets(self, *, limit: int = 100, offset: int = 0) -> Page[Preset]:
        return await self._get("/v1/presets", Page[Preset], limit=limit, offset=offset)

    async def create_preset(self, body: PresetCreate) -> Preset:
        return _validate(Preset, await self._request("POST", "/v1/presets", json=body.wire()))

    async def update_preset(self, preset_id: str, body: PresetCreate) -> Preset:
        return _validate(Preset, await self._request("PUT", f"/v1/presets/{preset_id}", json=body.wire()))

    async def delete_preset(self, preset_id: str) -> None:
        await self._request("DELETE", f"/v1/presets/{preset_id}")

    # reports, audit, constraints, health ----------------------------------------------------------
    async def reports(
        self, *, limit: int = 50, offset: int = 0, q: str | None = None, command_id: str | None = None
    ) -> Page[Report]:
        return await self._get(
            "/v1/reports", Page[Report], limit=limit, offset=offset, q=q, commandId=command_id
        )

    async def report(self, report_id: str) -> Report:
        return await self._get(f"/v1/reports/{report_id}", Report)

    async def export_report(self, report_id: str, fmt: str) -> str:
        response = await self._request("GET", f"/v1/reports/{report_id}/export", params={"format": fmt})
        return response.text

    async def audit(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        action: str | None = None,
        actor: str | None = None,
        agent_id: str | None = None,
        command_id: str | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> Page[AuditLog]:
        return await self._get(
            "/v1/audit-logs",
            Page[AuditLog],
            limit=limit,
            offset=offset,
            action=action,
            actor=actor,
            agentId=agent_id,
            commandId=command_id,
            since=since,
            until=until,
        )

    async def constraints(self) -> Page[ConstraintProfile]:
        return await self._get("/v1/constraints", Page[ConstraintProfile], limit=100)

    async def health(self) -> Health:
        try:
            response = await self._http.get("/health")
        except httpx.HTTPError as exc:
            raise HubError(f"the hub at {self.base_url} is unreachable ({type(exc).__name__})") from exc
        return _validate(Health, response)


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None and v != ""}


def _validate(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate(response.json())
    except (ValueError, ValidationError) as exc:
        raise HubError(
            f"the hub sent an answer this TUI does not understand: {exc}", response.status_code
        ) from exc
