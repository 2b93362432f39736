"""Reads the structured report an INVESTIGATE command ends with. A report that does not parse is
kept as a draft holding the raw text: never dropped."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from pydantic import ValidationError

from shared.api import Finding, ReportContent, ReportSection
from shared.enums import ReportStatus, Severity
from shared.protocol import InvestigationReport, InvestigationReportPayload

_FENCED = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL)


def _severity(value: Any) -> Severity:
    try:
        return Severity(str(value).upper())
    except ValueError:
        return Severity.INFO


def extract(text: str) -> tuple[ReportStatus, str, str, ReportContent]:
    """(status, title, summary, content) from the agent's final answer."""
    blocks = _FENCED.findall(text)
    candidate = blocks[-1] if blocks else text[text.find("{") :] if "{" in text else ""
    try:
        data = json.loads(candidate)
        if not isinstance(data, dict) or not str(data.get("title", "")).strip():
            raise ValueError("the report has no title")
        content = ReportContent(
            sections=[
                ReportSection(title=str(s.get("title", "")), content=str(s.get("content", "")))
                for s in data.get("sections") or []
                if isinstance(s, dict)
            ],
            findings=[
                Finding(
                    title=str(f.get("title", "")),
                    severity=_severity(f.get("severity")),
                    description=str(f.get("description", "")),
                    evidence=[str(e) for e in f.get("evidence") or []],
                )
                for f in data.get("findings") or []
                if isinstance(f, dict)
            ],
            recommendations=[str(r) for r in data.get("recommendations") or []],
        )
        return ReportStatus.COMPLETE, str(data["title"]).strip()[:500], str(data.get("summary", "")), content
    except (ValueError, TypeError, AttributeError, ValidationError):
        first_line = next((line.strip("# ").strip() for line in text.splitlines() if line.strip()), "")
        title = (first_line or "Investigation")[:120]
        return ReportStatus.DRAFT, f"Draft: {title}", "", ReportContent(raw=text)


def report_message(command_id: str, agent_id: str, answer: str) -> InvestigationReport:
    status, title, summary, content = extract(answer)
    return InvestigationReport(
        payload=InvestigationReportPayload(
            command_id=command_id,
            agent_id=agent_id,
            report_id=str(uuid.uuid4()),
            status=status,
            title=title,
            summary=summary,
            content=content,
        )
    )
