"""The wrapper reads its agent id from its token without verifying it (the hub does), and without
PyJWT: an idle wrapper's memory is a target (issue 3)."""

from __future__ import annotations

import subprocess
import sys

import jwt
import pytest

from wrapper.client import agent_id_from_token

SECRET = "s" * 40


def test_the_agent_id_is_the_subject_of_an_agent_token() -> None:
    token = jwt.encode({"sub": "agent-1", "typ": "agent", "exp": 2**40}, SECRET, algorithm="HS256")
    assert agent_id_from_token(token) == "agent-1"


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("not-a-token", "three dot-separated parts"),
        ("a.b!c.d", "do not decode"),
        ("a." + "WzFd" + ".c", "not an object"),  # base64url of "[1]"
        (jwt.encode({"sub": "u@x", "typ": "user"}, SECRET, algorithm="HS256"), "not an agent token"),
        (jwt.encode({"typ": "agent"}, SECRET, algorithm="HS256"), "not an agent token"),
    ],
)
def test_other_tokens_are_refused_with_a_reason(token: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        agent_id_from_token(token)


def test_the_wrapper_does_not_load_pyjwt_or_cryptography() -> None:
    code = (
        "import sys, wrapper.cli, wrapper.client, wrapper.executor;"
        "print(sorted(m for m in ('jwt', 'cryptography') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
