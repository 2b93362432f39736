r"""Schemathesis against a live hub: every operation of /openapi.json, authenticated with a user access
token, every check (``--checks all``: server errors, status codes, content types, headers and bodies
against the declared responses, negative data rejected, auth not ignored, deleted things gone, ...).

Targets: no server error, no response off its declared schema (status, content type, headers,
body), no other failure but the one below.

Not counted (the figure is printed): ST202 "schema-valid request rejected", which schemathesis finds
where JSON Schema and the hub's validation differ on purpose:
- integers written as floats (``"priority": 41.0``): JSON Schema's ``integer`` admits 41.0; the hub's
  models are strict ("3" is not an integer, 1 is not a boolean: shared/model.py) and answer 422;
- patterns: the document's regexes are read as ECMAScript by schemathesis and as Rust regexes by
  pydantic, whose ``\s`` also covers a few control and Unicode spaces (an email with U+0085 in it).

Nothing is excluded: /v1/emergency-stop runs too (the seed agent is offline by then, so it stops
nothing that other operations need).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.harness import BIN, HubProcess, timeout
from tests.reliability.helpers import figure, run_one_command

pytestmark = pytest.mark.reliability

#: Test cases per operation and phase: about a minute for the 33 operations on a 2-core machine.
MAX_EXAMPLES = 30

SERVER_ERRORS = {"ST101", "ST102"}
#: Status code not declared, content type missing/undeclared/malformed, declared headers missing,
#: body not matching its schema, not JSON, not deserialisable, discriminator mismatch.
OFF_SCHEMA = {"ST103", "ST104", "ST105", "ST106", "ST107", "ST108", "ST109", "ST110", "ST111"}
#: Strict integers, regex dialects (see the module's docstring).
TOLERATED = {"ST202"}


@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error_and_no_response_off_schema(
    hub: HubProcess, tmp_path: Path
) -> None:
    seeded = asyncio.run(run_one_command(hub, "schemathesis-seed"))
    with hub.client() as client:
        preset = client.post("/presets", json={"name": "seed preset", "content": "echo {{x}}"})
        assert preset.status_code == 201, preset.text
        profile = client.post("/constraints", json={"name": "seed profile", "tokenBudget": 1000})
        assert profile.status_code == 201, profile.text
    report_path = tmp_path / "schemathesis.json"
    output_path = tmp_path / "schemathesis.out"
    command = [
        str(BIN / "st"),
        "run",
        f"{hub.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {hub.user_token()}",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--request-timeout",
        str(timeout(30)),
        "--report",
        "json",
        "--report-json-path",
        str(report_path),
        "--output-truncate",
        "true",
    ]
    with open(output_path, "wb") as out:
        # Exit status 1 means "failures found": the report says which.
        # In tmp_path: schemathesis keeps a cache of what it found in its working directory.
        subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout(500), check=False, cwd=tmp_path
        )
    output = output_path.read_text(errors="replace")
    assert report_path.exists(), f"schemathesis wrote no report:\n{output[-4000:]}"
    report = json.loads(report_path.read_text())

    counts: Counter[str] = Counter()
    operations: dict[str, list[str]] = {}
    for failure in report["failures"]:
        counts[failure["code"]] += failure["count"]
        operations[failure["code"]] = failure["operations"]
    server_errors = sum(counts[c] for c in SERVER_ERRORS)
    off_schema = sum(counts[c] for c in OFF_SCHEMA)
    other = {c: n for c, n in counts.items() if c not in SERVER_ERRORS | OFF_SCHEMA | TOLERATED}
    tested = report["operations"]["tested"]
    figure("schemathesis operations tested", f"{tested}/{report['operations']['total']}")
    figure("schemathesis test cases", report["test_cases"]["generated"])
    figure("schemathesis server errors", server_errors)
    figure("schemathesis responses off their schema", off_schema)
    figure("schemathesis other failures", sum(other.values()))
    figure("schemathesis strict-integer rejections (ST202, not counted)", counts["ST202"])
    figure("schemathesis seed", report["seed"])
    figure("schemathesis run time", f"{report['running_time']:.0f}", "s")

    detail = f"{dict(counts)} in {operations}; seed {report['seed']}\n{output[-6000:]}"
    assert report["errors"] == [], detail
    assert tested == report["operations"]["total"], detail
    assert server_errors == 0, detail
    assert off_schema == 0, detail
    assert other == {}, detail
    # The hub is still whole, and the seeded records were there to be served.
    with hub.client() as client:
        assert client.get(f"/agents/{seeded['agent_id']}").status_code == 200
    assert hub.process is not None and hub.process.poll() is None
