"""Wrapper overhead: a CLI printing 20,000 lines as fast as it can, run bare and through the wrapper
to a hub. Prints lines/s through the wrapper to the hub (stored), the wrapper's and the hub's CPU
time per 1,000 lines, the agent's run time with the wrapper over without (target within 10 %), and
the RSS of an idle wrapper (target ≤ 30 MB).

The hub here shares the machine with the CLI and the wrapper, which it would not where agents
connect from other machines, and its CPU is not the wrapper's overhead. So the runs are made twice:
with the hub at its normal priority (a laptop running everything), then with the hub at nice 19
(the hub standing in for one elsewhere; the CLI and the wrapper keep theirs).

    PYTHONPATH=. .venv/bin/python benchmarks/wrapper_overhead.py [--lines N] [--kind claude|shell] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from benchmarks._common import metric, note, running_hub
from tests.harness import FAKES, AgentProcess, start_agent, wait_command, wait_until


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


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def settle(
    processes: list[psutil.Process], quiet: float = 0.05, window: float = 0.5, limit: float = 60
) -> None:
    """Waits until the hub and the wrapper are idle (under ``quiet`` of a core over ``window``), so
    that no run pays for the work left over from the one before (the hub storing the last run's
    traces slowed the next bare run by up to 70 %)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(processes)
        time.sleep(window)
        if cpu_seconds(processes) - before < quiet * window:
            return
    note(f"the hub and the wrapper were still busy after {limit:.0f} s; measuring anyway")


def renice(processes: list[psutil.Process], value: int) -> None:
    """Every thread of every process: on Linux a nice value is a thread's own."""
    for process in processes:
        try:
            threads = process.threads()
        except psutil.Error:
            continue
        for thread in threads:
            try:
                os.setpriority(os.PRIO_PROCESS, thread.id, value)
            except OSError:
                pass


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


@dataclass
class Runs:
    bare: list[float] = field(default_factory=list)
    #: the CLI's run time inside the wrapper, as the wrapper measured it (process start to exit)
    wrapped: list[float] = field(default_factory=list)
    at_hub: list[float] = field(default_factory=list)
    through: list[float] = field(default_factory=list)
    wrapper_cpu_per_k: list[float] = field(default_factory=list)
    hub_cpu_per_k: list[float] = field(default_factory=list)


def wrapped_run(
    client: httpx.Client,
    agent: AgentProcess,
    wrapper: psutil.Process,
    hub_tree: list[psutil.Process],
    content: str,
    lines: int,
    runs: Runs,
) -> None:
    log_before = len(agent.log_path.read_text())
    wrapper_before = cpu_seconds([wrapper])
    hub_before = cpu_seconds(hub_tree)
    started = time.perf_counter()
    response = client.post("/commands", json={"content": content, "targetAgents": [agent.agent_id]})
    command_id = response.json()["id"]
    done = wait_command(client, command_id, 300)
    execution = done["executions"][0]
    if done["status"] != "COMPLETED":
        raise SystemExit(f"the command ended {done['status']}: {execution['error']}")

    def stored(cid: str = command_id, expected: int = execution["outputLines"]) -> bool:
        items = client.get(f"/commands/{cid}/output", params={"limit": 5000}).json()
        return bool(items["total"] >= expected)

    wait_until(stored, 120, "the output to be stored")
    total = time.perf_counter() - started
    settle([*hub_tree, wrapper])  # the hub's share includes its storing the traces
    wrapper_cpu = cpu_seconds([wrapper]) - wrapper_before
    hub_cpu = cpu_seconds(hub_tree) - hub_before
    inside = re.findall(r"completed in (\d+) ms", agent.log_path.read_text()[log_before:])
    if not inside:
        raise SystemExit("the wrapper logged no run time for the command")
    runs.wrapped.append(int(inside[-1]) / 1000)
    runs.at_hub.append((execution["completedAt"] - execution["startedAt"]) / 1000)
    runs.through.append(lines / total)
    runs.wrapper_cpu_per_k.append(wrapper_cpu / lines * 1000 * 1000)
    runs.hub_cpu_per_k.append(hub_cpu / lines * 1000 * 1000)
    note(
        f"bare {runs.bare[-1] * 1000:.0f} ms, wrapped {runs.wrapped[-1] * 1000:.0f} ms;"
        f" {total:.2f}s end to end; cpu: wrapper {wrapper_cpu:.2f}s, hub {hub_cpu:.2f}s"
    )


def report(kind: str, hub: str, runs: Runs) -> None:
    # Each wrapped run beside the bare run just before it, minutes apart at most: the median of
    # those ratios, and the ratio of the fastest of each.
    paired = sorted(w / b for w, b in zip(runs.wrapped, runs.bare, strict=True))
    prefix = f"wrapper_{kind}_{hub}"
    metric(f"{prefix}_bare_run", min(runs.bare) * 1000, "ms")
    metric(f"{prefix}_wrapped_run", min(runs.wrapped) * 1000, "ms")
    metric(f"{prefix}_dispatch_to_completion_at_hub", min(runs.at_hub) * 1000, "ms")
    metric(f"{prefix}_run_time_ratio_median_pair", statistics.median(paired), "x", "<= 1.10")
    metric(f"{prefix}_run_time_ratio_fastest", min(runs.wrapped) / min(runs.bare), "x", "<= 1.10")
    metric(f"{prefix}_lines_per_s_stored", max(runs.through), "lines/s")
    metric(f"{prefix}_wrapper_cpu_per_1000_lines", statistics.median(runs.wrapper_cpu_per_k), "ms")
    metric(f"{prefix}_hub_cpu_per_1000_lines", statistics.median(runs.hub_cpu_per_k), "ms")


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
            assert hub.process is not None
            hub_tree = tree(hub.process.pid)
            time.sleep(3)  # settle: imports done, first heartbeat sent
            idle_rss = wrapper.memory_info().rss / 2**20
            with hub.client() as client:
                for hub_nice in (0, 19):
                    renice(hub_tree, hub_nice)
                    note(f"hub at nice {hub_nice}")
                    runs = Runs()
                    for _ in range(args.runs):
                        settle([*hub_tree, wrapper])
                        runs.bare.append(bare_run(args.kind, args.lines, workdir))
                        settle([*hub_tree, wrapper])
                        wrapped_run(client, agent, wrapper, hub_tree, content, args.lines, runs)
                    report(args.kind, f"hub_nice_{hub_nice}", runs)
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
