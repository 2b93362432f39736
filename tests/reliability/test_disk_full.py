"""The SQLite file's disk fills up (a small tmpfs): the hub says so in /health and its log, keeps
streaming live, and writes everything once there is room again."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import HubProcess, async_wait_until, timeout
from tests.reliability.test_faults import (
    TuiClient,
    _lost_lines,
    expected_text,
    gated_script,
    start_agents,
    stored,
    submit,
)

pytestmark = pytest.mark.reliability

DISK_MB = 24


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the disk; returns the filler file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (256 * 1024, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler


def unhealthy(body: dict) -> dict | None:  # type: ignore[type-arg]
    return None if body["database"]["ok"] else body


def health(hub: HubProcess) -> dict:  # type: ignore[type-arg]
    return httpx.get(hub.url + "/health", timeout=timeout(10)).json()  # type: ignore[no-any-return]


async def test_a_full_disk_keeps_streaming_and_loses_no_line(tmp_path: Path, small_disk: Path) -> None:
    database = small_disk / "onsembl.sqlite"
    hub = HubProcess(
        tmp_path / "hub", workers=4, env_overrides={"ONSEMBL_DATABASE_URL": f"sqlite:///{database}"}
    ).start()
    (agent,) = start_agents(hub, "disk", 1)
    gate = tmp_path / "gate"
    counts = tmp_path / "counts"
    counts.mkdir()
    tui = TuiClient(hub)
    filler: Path | None = None
    try:
        await tui.start()
        with hub.client() as client:
            command_id = submit(client, agent, gated_script("disk", gate, counts / "disk"))
        await async_wait_until(lambda: tui.lines_of(command_id) >= 30, 30, "the stream under way")
        filler = fill(small_disk)
        full_at = time.monotonic()
        # /health says the database is in trouble, and why.
        body = await async_wait_until(lambda: unhealthy(health(hub)), 60, "/health to say so")
        said_after = time.monotonic() - full_at
        lines_when_full = tui.lines_of(command_id)
        await async_wait_until(
            lambda: tui.lines_of(command_id) > lines_when_full + 300, 40, "live output while full"
        )
        streamed_while_full = tui.lines_of(command_id) - lines_when_full
        log_says = "full" in hub.log_path.read_text(errors="replace").lower()
        # Room again: the store writes what waited in Redis.
        filler.unlink()
        filler = None
        freed_at = time.monotonic()
        gate.touch()
        await async_wait_until(lambda: health(hub)["database"]["ok"], 60, "the database healthy again")
        with hub.client() as client:
            await async_wait_until(lambda: (counts / "disk").exists(), 60, "the command to finish")
            text = expected_text("disk", int((counts / "disk").read_text()))

            def caught_up() -> bool:
                got, _ = stored(client, command_id)
                return _lost_lines(got, text) == 0

            await async_wait_until(caught_up, 60, "the store to catch up")
            got, dupes = stored(client, command_id)
        caught_up_s = time.monotonic() - freed_at
        lost = _lost_lines(got, text)
        print(
            f"\ndisk full: /health said so after {said_after:.1f}s "
            f"(status {body['status']}, database: {body['database']['detail'][:120]!r}); "
            f"log mentions it: {log_says}"
        )
        print(f"lines streamed live to the TUI while the disk was full: {streamed_while_full}")
        print(
            f"store caught up {caught_up_s:.1f}s after space returned; lines lost {lost}, duplicated {dupes}"
        )
        assert "full" in body["database"]["detail"].lower()
        assert log_says
        assert lost == 0 and dupes == 0
    finally:
        if filler is not None:
            filler.unlink(missing_ok=True)
        gate.touch()
        await tui.stop()
        agent.stop()
        hub.stop()
        hub.shutdown_redis()
