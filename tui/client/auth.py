"""Where the TUI's bearer token comes from: a fixed token (``--token``, ``ONSEMBL_TOKEN``) or the
credentials file, refreshed silently before it expires."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from shared.api import RefreshRequest, TokenPair
from tui.client import credentials as creds


class TokenSource:
    """A fixed token: nothing to refresh."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    @property
    def email(self) -> str:
        return ""


class RefreshingTokenSource(TokenSource):
    """Tokens from the credentials file; rotates the pair through ``/v1/auth/refresh`` when the
    access token is about to expire and writes the new pair back (the old refresh token is spent)."""

    def __init__(self, credentials: creds.Credentials, path: Path | None = None) -> None:
        super().__init__(credentials.access_token)
        self.credentials = credentials
        self.path = path
        self._lock = asyncio.Lock()

    @property
    def email(self) -> str:
        return self.credentials.email

    async def token(self) -> str:
        if self.credentials.needs_refresh():
            async with self._lock:
                if self.credentials.needs_refresh():
                    await self._refresh()
        return self.credentials.access_token

    async def _refresh(self) -> None:
        assert self.credentials.refresh_token is not None
        body = RefreshRequest(refresh_token=self.credentials.refresh_token).wire()
        async with httpx.AsyncClient(base_url=self.credentials.server_url, timeout=10) as http:
            response = await http.post("/v1/auth/refresh", json=body)
        if response.status_code != 200:
            # Keep the old token: it may still work for a minute, and the UI reports the 401 it gets.
            return
        pair = TokenPair.model_validate(response.json())
        self.credentials = creds.Credentials.from_pair(self.credentials.server_url, pair)
        creds.save(self.credentials, self.path)
