from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select

from server.api.deps import HubDep, Limit, Offset, UserDep, errors
from server.db.models import ReportRow
from server.errors import not_found
from shared.api import Page, Report, ReportContent
from shared.enums import ReportStatus

router = APIRouter(prefix="/reports", tags=["reports"], responses=errors(401, 403, 404, 422))


def _record(row: ReportRow) -> Report:
    return Report(
        id=row.id,
        command_id=row.command_id,
        agent_id=row.agent_id,
        status=ReportStatus(row.status),
        title=row.title,
        summary=row.summary,
        content=ReportContent.model_validate(row.content or {}),
        created_at=row.created_at,
    )


def to_markdown(report: Report) -> str:
    lines = [f"# {report.title}", "", f"*Status: {report.status.value} · command {report.command_id}*", ""]
    if report.summary:
        lines += ["## Summary", "", report.summary, ""]
    for section in report.content.sections:
        lines += [f"## {section.title}", "", section.content, ""]
    if report.content.findings:
        lines += ["## Findings", ""]
        for finding in report.content.findings:
            lines.append(f"### [{finding.severity.value}] {finding.title}")
            lines += ["", finding.description, ""] if finding.description else [""]
            for evidence in finding.evidence:
                lines.append(f"- {evidence}")
            lines.append("")
    if report.content.recommendations:
        lines += ["## Recommendations", ""] + [f"- {r}" for r in report.content.recommendations] + [""]
    if report.content.raw:
        lines += ["## Raw report", "", "```", report.content.raw, "```", ""]
    return "\n".join(lines)


@router.get("", response_model=Page[Report])
async def list_reports(
    hub: HubDep,
    _: UserDep,
    limit: Limit = 50,
    offset: Offset = 0,
    q: Annotated[str | None, Query(max_length=500)] = None,
    command_id: Annotated[str | None, Query(alias="commandId")] = None,
) -> Page[Report]:
    stmt = select(ReportRow)
    if q:
        stmt = stmt.where(ReportRow.title.ilike(f"%{q}%") | ReportRow.summary.ilike(f"%{q}%"))
    if command_id:
        stmt = stmt.where(ReportRow.command_id == command_id)
    async with hub.sessions() as session:
        total = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
        rows = (
            await session.execute(stmt.order_by(ReportRow.created_at.desc()).limit(limit).offset(offset))
        ).scalars()
        return Page[Report](items=[_record(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{report_id}", response_model=Report)
async def get_report(report_id: str, hub: HubDep, _: UserDep) -> Report:
    async with hub.sessions() as session:
        row = await session.get(ReportRow, report_id)
        if row is None:
            raise not_found("report", report_id)
        return _record(row)


@router.get(
    "/{report_id}/export", responses={200: {"content": {"text/markdown": {}, "application/json": {}}}}
)
async def export_report(
    report_id: str, hub: HubDep, _: UserDep, format: Literal["json", "markdown"] = "markdown"
) -> Response:
    report = await get_report(report_id, hub, _)
    if format == "json":
        return Response(
            json.dumps(report.wire(), indent=2),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="report-{report_id}.json"'},
        )
    return Response(
        to_markdown(report),
        media_type="text/markdown",
        headers={"Content-Disposition": f'attachment; filename="report-{report_id}.md"'},
    )
