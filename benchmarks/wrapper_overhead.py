"""Wrapper overhead: a CLI printing 20,000 lines as fast as it can, run bare and through the wrapper
to a hub. Prints lines/s through the wrapper to the hub (stored), the wrapper's CPU time per 1,000
lines, the agent's run time with the wrapper over without (target within 10 %), and the RSS of an
idle wrapper (target ≤ 30 MB).

    PYTHONPATH=. .venv/bin/python benchmarks/wrapper_overhead.py [--lines N] [--kind claude|shell]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks._common import metric, note, running_hub
from tests.harness import FAKES, start_agent, wait_command, wait_until


def bare_run(kind: str, lines: int, workdir: Path) -> float:
    """Seconds the CLI takes on its own, output to a pipe that is read as fast as possible."""
    env = dict(os.environ, PATH=f"{FAKES}{os.pathsep}{os.environ['PATH']}", FAKE_CLI_DELAY="0")
    env["FAKE_CLI_STATE_DIR"] = str(workdir / "bare-state")
    if kind == "claude":
        argv = [
            "claude",
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ]
        stdin = (
            json.dumps({"type": "user", "message": {"role": "user", "content": f"scenario:lines:{lines}"}})
            + "\n"
        )
    else:
        argv, stdin = ["bash", "-c", f"seq 1 {lines}"], ""
    started = time.perf_counter()
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, cwd=workdir)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bare {kind} failed: {done.stderr[-500:]}")
    return elapsed


#: What a wrapper cannot do without: the interpreter with asyncio, pydantic (its models), the
#: websockets client and psutil (health), imported and nothing else.
STACK_FLOOR = """
import asyncio, pydantic, psutil
import websockets.asyncio.client
class Model(pydantic.BaseModel):
    x: int
Model(x=1)
print(psutil.Process().memory_info().rss)
"""


def stack_floor_rss() -> float:
    """RSS (MB) of a fresh interpreter holding only the wrapper's required stack: the floor under the
    idle wrapper's own figure on this machine."""
    done = subprocess.run([sys.executable, "-c", STACK_FLOOR], capture_output=True, text=True, check=True)
    return int(done.stdout.strip()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--kind", choices=["claude", "shell"], default="claude")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="onsembl-wrapper-bench-"))
    content = f"scenario:lines:{args.lines}" if args.kind == "claude" else f"seq 1 {args.lines}"
    with running_hub(workers=4) as hub:
        agent = start_agent(
            hub, f"bench-{args.kind}", kind=args.kind, workdir=workdir, extra_env={"FAKE_CLI_DELAY": "0"}
        )
        try:
            wrapper = psutil.Process(agent.process.pid)
            time.sleep(3)  # settle: imports done, first heartbeat sent
            idle_rss = wrapper.memory_info().rss / 2**20
            # Bare and wrapped runs alternate, so that the machine's drift (large on 2 shared cores)
            # falls on both alike.
            bares: list[float] = []
            wrapped: list[float] = []
            through: list[float] = []
            cpu_per_k: list[float] = []
            with hub.client() as client:
                for _ in range(args.runs):
                    bares.append(bare_run(args.kind, args.lines, workdir))
                    cpu_before = sum(wrapper.cpu_times()[:2])
                    started = time.perf_counter()
                    response = client.post(
                        "/commands", json={"content": content, "targetAgents": [agent.agent_id]}
                    )
                    command_id = response.json()["id"]
                    done = wait_command(client, command_id, 300)
                    if done["status"] != "COMPLETED":
                        raise SystemExit(
                            f"the command ended {done['status']}: {done['executions'][0]['error']}"
                        )

                    expected = done["executions"][0]["outputLines"]

                    def stored(cid: str = command_id, lines: int = expected) -> bool:
                        items = client.get(f"/commands/{cid}/output", params={"limit": 5000}).json()
                        return bool(items["total"] >= lines)

                    wait_until(stored, 120, "the output to be stored")
                    total = time.perf_counter() - started
                    cpu = sum(wrapper.cpu_times()[:2]) - cpu_before
                    wrapped.append(done["executions"][0]["completedAt"] - done["executions"][0]["startedAt"])
                    through.append(args.lines / total)
                    cpu_per_k.append(cpu / args.lines * 1000 * 1000)
                    note(f"run: {total:.2f}s end to end, wrapper cpu {cpu:.2f}s")
            # The CLI's run time inside the wrapper, as the wrapper measured it (process start to exit).
            inside = [int(m) for m in re.findall(r"completed in (\d+) ms", agent.log_path.read_text())]
            bare = min(bares)
            ratio = (min(inside) / 1000) / bare if inside else float("nan")
            note(
                "bare runs (ms): " + ", ".join(f"{b * 1000:.0f}" for b in bares)
                + "; wrapped (ms): " + ", ".join(str(i) for i in inside)
            )  # fmt: skip
            metric(f"wrapper_{args.kind}_bare_run", bare * 1000, "ms")
            metric(f"wrapper_{args.kind}_wrapped_run", min(inside) if inside else float("nan"), "ms")
            metric(f"wrapper_{args.kind}_dispatch_to_completion_at_hub", min(wrapped), "ms")
            metric(f"wrapper_{args.kind}_run_time_ratio", ratio, "x", "<= 1.10")
            metric(f"wrapper_{args.kind}_lines_per_s_stored", max(through), "lines/s")
            metric(f"wrapper_{args.kind}_cpu_per_1000_lines", min(cpu_per_k), "ms")
            metric(f"wrapper_{args.kind}_idle_rss", idle_rss, "MB", "<= 30")
            floor = stack_floor_rss()
            metric(
                "stack_floor_rss",
                floor,
                "MB",
                "- (python + asyncio + pydantic + websockets + psutil, imported and nothing else)",
            )
            metric(f"wrapper_{args.kind}_idle_rss_over_floor", idle_rss - floor, "MB", "-")
        finally:
            agent.stop()
    note(f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
