"""The TUI under load: 20 agents streaming 5,000 lines/s in total into one hub, the real Onsembl TUI
(the app ``onsembl-tui`` runs, headless, driven by Textual's Pilot) connected to it.

Figures:
* key press -> screen updated, p50/p99, while streaming: a key event posted as the terminal driver
  posts it, until the compositor renders an update with the agents table's cursor moved;
* lines received and lines drawn per second by the combined output pane;
* TUI CPU while idle with the 20 agents connected (heartbeats only);
* TUI RSS after 1,000,000 lines (fed through the stream's own frame parser in EVENT_BATCH frames,
  as the hub sends them; scrollback bounded by the ``scrollback`` setting).

The agents (the load generator) run in a child process with their own CPU; they send what the
wrapper sends: TERMINAL_OUTPUT messages packed in AGENT_BATCH frames, 20 frames/s per agent.

    PYTHONPATH=. .venv/bin/python benchmarks/tui_streaming.py [--quick] [--seconds N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

import psutil
from textual import events
from textual.widgets import DataTable

from benchmarks._common import (
    CpuSampler,
    SimAgent,
    agent_tokens,
    connect_agents,
    metric,
    note,
    other_load_metric,
    percentile,
    running_hub,
    self_process,
    submit_commands,
    verdict,
)
from shared.enums import AgentType, StreamType
from shared.protocol import (
    TerminalStream,
    TerminalStreamPayload,
    agent_batch_frame,
    event_batch_frame,
    now_ms,
    stream_frame,
    stream_json,
)

TARGET_KEY_P99_MS = 100.0
TARGET_RSS_MB = 250.0
TARGET_IDLE_CPU = 3.0
BATCHES_PER_S = 20
PAD = "x" * 48


# ---- the agents, in a child process ---------------------------------------------------------------
def _agents_entry(conn: Connection, ws_url: str, creds: list[tuple[str, str, str]], rate: float) -> None:
    asyncio.run(_agents_main(conn, ws_url, creds, rate))


async def _agents_main(conn: Connection, ws_url: str, creds: list[tuple[str, str, str]], rate: float) -> None:
    agents = await connect_agents(ws_url, creds)
    conn.send("connected")
    commands: dict[str, str] = {}
    for agent in agents:
        _, request = await agent.next_request(60)
        await agent.ack(request.payload.command_id)
        commands[agent.agent_id] = request.payload.command_id
    conn.send("acknowledged")
    loop = asyncio.get_running_loop()
    seconds = await loop.run_in_executor(None, conn.recv)
    per_batch = max(1, round(rate / BATCHES_PER_S))
    sent: dict[str, int] = {}

    async def stream(agent: SimAgent, offset: float) -> None:
        command_id = commands[agent.agent_id]
        start = time.monotonic() + offset
        sequence = 0
        tick = 0
        while time.monotonic() - start < seconds:
            delay = start + tick / BATCHES_PER_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            frames = [
                agent.output(command_id, sequence + i, f"{agent.name} line {sequence + i:07d} {PAD}")
                for i in range(per_batch)
            ]
            if not await agent.send_frame(agent_batch_frame(frames)):
                break
            sequence += per_batch
            tick += 1
        sent[agent.agent_id] = sequence

    await asyncio.gather(*(stream(a, i / (len(agents) * BATCHES_PER_S)) for i, a in enumerate(agents)))
    conn.send(sum(sent.values()))
    await loop.run_in_executor(None, conn.recv)  # stay connected (idle) until told
    await asyncio.gather(*(a.close() for a in agents))


# ---- the TUI, in this process ----------------------------------------------------------------------
def synthetic_frames(lines: int, per_frame: int = 500) -> Any:
    """EVENT_BATCH frames of TERMINAL_STREAM events, as the hub sends them."""
    base = now_ms()
    for start in range(0, lines, per_frame):
        events = []
        for sequence in range(start, min(lines, start + per_frame)):
            agent = sequence % 20
            event = TerminalStream(
                position=f"{base + 10_000 + sequence // 1000}-{sequence % 1000}",
                payload=TerminalStreamPayload(
                    command_id=f"mem-command-{agent}",
                    agent_id=f"mem-agent-{agent}",
                    agent_name=f"mem-agent-{agent}",
                    agent_type=AgentType.SHELL,
                    stream_type=StreamType.STDOUT,
                    content=f"memory line {sequence:07d} {PAD}\n",
                    sequence=sequence // 20,
                    emitted_at=base,
                ),
            )
            events.append(stream_frame(stream_json(event), event.position or "0-0"))
        yield event_batch_frame(events)


class GcPauses:
    """The TUI process's garbage-collection pauses while it is measured (gc.callbacks)."""

    def __init__(self) -> None:
        self.count = 0
        self.over_10ms = 0
        self.longest_ms = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = (time.perf_counter() - self._started) * 1000
        self.count += 1
        self.over_10ms += pause > 10
        self.longest_ms = max(self.longest_ms, pause)

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


async def key_to_screen(app: Any, table: Any, key: str) -> float:
    """Milliseconds from a key arriving (as the terminal driver delivers it) to the screen update
    that shows its effect: the agents table's cursor row moved and that region was drawn."""
    before = table.cursor_row
    drawn = asyncio.Event()
    original = app.screen._compositor.render_update

    def spy(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if table.cursor_row != before:
            drawn.set()
        return result

    app.screen._compositor.render_update = spy
    t0 = time.perf_counter()
    app.post_message(events.Key(key, None))
    try:
        await asyncio.wait_for(drawn.wait(), 30)
    finally:
        app.screen._compositor.render_update = original
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="15 s of streaming and idle instead of 60 s")
    parser.add_argument("--seconds", type=float, help="streaming time (default 60, --quick 15)")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--rate", type=float, default=5000.0, help="lines per second, all agents together")
    parser.add_argument("--memory-lines", type=int, default=1_000_000)
    parser.add_argument("--scrollback", type=int, default=10_000)
    args = parser.parse_args()
    seconds = args.seconds or (15.0 if args.quick else 60.0)

    from tui.app import OnsemblApp
    from tui.client.auth import TokenSource
    from tui.config import TuiSettings

    with running_hub(args.agents + 10) as hub:
        creds = agent_tokens(hub, args.agents, "tui")
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        loadgen = ctx.Process(
            target=_agents_entry, args=(child, hub.ws_url, creds, args.rate / args.agents), daemon=True
        )
        loadgen.start()
        assert parent.poll(60) and parent.recv() == "connected"
        submit_commands(hub, [c[1] for c in creds])
        assert parent.poll(60) and parent.recv() == "acknowledged"
        note(f"{args.agents} agents connected and running a command each")

        settings = TuiSettings(bell=False, history_file=None, scrollback=args.scrollback, backfill_minutes=0)
        app = OnsemblApp(server_url=hub.url, tokens=TokenSource(hub.user_token()), settings=settings)
        me = self_process()

        async def scenario() -> None:
            async with app.run_test(size=(160, 48)) as pilot:
                deadline = time.monotonic() + 30
                while len(app.hub.agents) < args.agents and time.monotonic() < deadline:
                    await pilot.pause(0.1)
                combined = app.screen.query_one("#combined")
                received0, shown0 = app.hub.lines_received, combined.lines_shown  # type: ignore[attr-defined]
                sampler = CpuSampler({"tui": me, "loadgen": psutil.Process(loadgen.pid)})
                parent.send(seconds)
                note(f"streaming {args.rate:g} lines/s for {seconds:g}s; pressing keys meanwhile")
                gc_pauses = GcPauses()
                sampler.start()
                begun = time.monotonic()
                key_ms: list[float] = []
                table = app.screen.query_one("#agents", DataTable)
                table.focus()
                while time.monotonic() - begun < seconds:
                    key_ms.append(await key_to_screen(app, table, "down" if len(key_ms) % 2 == 0 else "up"))
                    await asyncio.sleep(0.1)
                sent = await asyncio.to_thread(parent.recv)
                elapsed = time.monotonic() - begun
                gc_pauses.stop()
                note(f"slowest keys (ms): {', '.join(f'{v:.0f}' for v in sorted(key_ms)[-6:])}")
                streaming_cpu = sampler.percent()
                others = sampler.others()
                # Let the tail arrive.
                deadline = time.monotonic() + 30
                while app.hub.lines_received - received0 < sent and time.monotonic() < deadline:
                    await pilot.pause(0.2)
                received = app.hub.lines_received - received0
                shown = combined.lines_shown - shown0  # type: ignore[attr-defined]

                note("idle: agents connected, nothing streaming")
                idle = CpuSampler({"tui": me})
                idle.start()
                await asyncio.sleep(seconds)
                idle_cpu = idle.percent()["tui"]
                idle_others = idle.others()

                note(f"feeding {args.memory_lines:,} lines through the stream parser")
                started = time.monotonic()
                for frame in synthetic_frames(args.memory_lines):
                    app.stream._receive(frame)
                    await asyncio.sleep(0)
                await pilot.pause(0.5)
                feed_s = time.monotonic() - started
                gc.collect()
                rss = me.memory_info().rss / 2**20

            key_ms.sort()
            p99 = percentile(key_ms, 99)
            metric("key_to_screen_p50", percentile(key_ms, 50), "ms", "-")
            metric(
                "key_to_screen_p99",
                p99,
                "ms",
                f"<= {TARGET_KEY_P99_MS:g} ms while streaming: {verdict(p99 <= TARGET_KEY_P99_MS)}",
            )
            metric("keys_pressed", len(key_ms), "keys")
            metric(
                "gc_pause_max_streaming",
                gc_pauses.longest_ms,
                "ms",
                f"- ({gc_pauses.count} collections, {gc_pauses.over_10ms} of them over 10 ms)",
            )
            metric("lines_sent", sent, "lines", f"{args.rate:g}/s x {seconds:g} s")
            metric("lines_received", received, "lines", f"= {sent}: {verdict(received == sent)}")
            metric("lines_received_per_s", received / elapsed, "lines/s", f"{args.rate:g}")
            metric(
                "lines_drawn_per_s",
                shown / elapsed,
                "lines/s",
                "- (the combined pane draws only the last lines of a burst it cannot show)",
            )
            metric("cpu_tui_streaming", streaming_cpu["tui"], "% of one core", "-")
            metric("cpu_loadgen_streaming", streaming_cpu["loadgen"], "% of one core", "-")
            metric(
                "cpu_tui_idle",
                idle_cpu,
                "% of one core",
                f"<= {TARGET_IDLE_CPU:g}% with {args.agents} agents connected: "
                f"{verdict(idle_cpu <= TARGET_IDLE_CPU)}"
                # The Up column counts seconds in an agent's first minute, minutes after.
                + (
                    " (--quick: the agents are up under a minute, their Up cells tick each second)"
                    if args.quick
                    else ""
                ),
            )
            metric("memory_feed_rate", args.memory_lines / feed_s, "lines/s", "- (parse + state + draw)")
            metric(
                "tui_rss_after_lines",
                rss,
                "MB",
                f"<= {TARGET_RSS_MB:g} MB after {args.memory_lines:,} lines "
                f"(scrollback {args.scrollback:,}): {verdict(rss <= TARGET_RSS_MB)}",
            )
            other_load_metric(max(others, idle_others))

        try:
            asyncio.run(scenario())
        finally:
            parent.send("stop")
            loadgen.join(10)
            if loadgen.is_alive():
                loadgen.kill()


if __name__ == "__main__":
    main()
