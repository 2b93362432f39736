"""Errors the hub's services raise; REST turns them into ``{error, message, details}`` with a status,
WebSockets into an ERROR message."""

from __future__ import annotations

from typing import Any

from shared.enums import ErrorCode


class ServiceError(Exception):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        status: int,
        details: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details
        self.headers = headers or {}


def not_found(what: str, ident: str) -> ServiceError:
    return ServiceError(ErrorCode.NOT_FOUND, f"{what} {ident} not found", 404, {"id": ident})


def conflict(message: str, details: Any = None) -> ServiceError:
    return ServiceError(ErrorCode.CONFLICT, message, 409, details)


def invalid(message: str, details: Any = None) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_MESSAGE, message, 400, details)
