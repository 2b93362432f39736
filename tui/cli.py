"""``onsembl-tui``: the terminal UI, and ``onsembl-tui login EMAIL`` to sign in.

    onsembl-tui [--server URL] [--token TOKEN]
    onsembl-tui login EMAIL [--server URL] [--code CODE]
    onsembl-tui --serve [--serve-port 8710]     # the same TUI in a web browser (textual-serve)

The hub URL comes from --server, ONSEMBL_SERVER_URL, ``server_url`` in the settings file (ONSEMBL_CONFIG),
the credentials file, or http://127.0.0.1:8700; the token from --token, ONSEMBL_TOKEN, the credentials
file written by ``login`` (refreshed silently while the TUI runs), or ``token`` in the settings file
(not an agent's).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
from pydantic import ValidationError

from shared.api import MagicLinkRequest, TokenPair, VerifyRequest
from shared.config import DEFAULT_PORT, ClientSettings
from shared.tokens import token_claims
from tui.client import credentials as creds
from tui.client.auth import RefreshingTokenSource, TokenSource

DEFAULT_SERVER = f"http://127.0.0.1:{DEFAULT_PORT}"
DEFAULT_SERVE_PORT = 8710
EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "login":
        raise SystemExit(login_main(argv[1:]))
    parser = argparse.ArgumentParser(
        prog="onsembl-tui", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", help="hub base URL (http://host:port)")
    parser.add_argument("--token", help="an access token (default: the credentials from `onsembl-tui login`)")
    parser.add_argument("--credentials", type=Path, help="credentials file (default: per-user config dir)")
    web = parser.add_argument_group("serving to a browser (needs the `serve` extra: textual-serve)")
    web.add_argument("--serve", action="store_true", help="serve this TUI over HTTP, not here")
    web.add_argument("--serve-host", default="127.0.0.1", help="address to listen on (default: loopback)")
    web.add_argument("--serve-port", type=int, default=DEFAULT_SERVE_PORT, help="port (default %(default)s)")
    web.add_argument("--public-url", help="the URL browsers use, when behind a proxy (https://...)")
    web.add_argument(
        "--serve-public",
        action="store_true",
        help="allow a non-loopback --serve-host: whoever reaches it gets a TUI signed in as you",
    )
    args = parser.parse_args(argv)
    try:
        server, tokens = resolve(args.server, args.token, args.credentials)
    except creds.CredentialsError as exc:
        print(f"onsembl-tui: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from exc
    if tokens is None:
        print(
            "onsembl-tui: not signed in. Run `onsembl-tui login YOU@EXAMPLE.COM`, or pass --token "
            "(`onsembl token user EMAIL` on the hub's machine prints one).",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG)
    if args.serve:
        raise SystemExit(serve(args, server))
    run(server, tokens)


def serve(args: argparse.Namespace, server: str) -> int:
    """Serve the TUI to browsers: textual-serve runs one ``onsembl-tui`` process per browser tab, signed
    in as the user who started this (with the same token or credentials file)."""
    try:
        from textual_serve.server import Server
    except ImportError:
        print(
            "onsembl-tui --serve needs textual-serve: pip install 'onsembl[serve]' "
            "(or pipx inject onsembl textual-serve)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    loopback = args.serve_host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not args.serve_public:
        print(
            f"onsembl-tui --serve: {args.serve_host} is not a loopback address, and the served TUI is signed "
            "in as you with no login of its own. Reach it through an SSH tunnel, or put a proxy that "
            "authenticates in front and pass --serve-public.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    command = [sys.executable, "-m", "tui.cli", "--server", server]
    if args.credentials:
        command += ["--credentials", str(args.credentials)]
    if args.token:
        os.environ["ONSEMBL_TOKEN"] = args.token  # inherited by the app processes, not on their command line
    Server(
        shlex.join(command),
        host=args.serve_host,
        port=args.serve_port,
        title="Onsembl",
        public_url=args.public_url,
    ).serve()
    return 0


def _shared_settings() -> ClientSettings:
    """ONSEMBL_SERVER_URL and ONSEMBL_TOKEN, else ``server_url`` and ``token`` of the settings file
    every command reads (ONSEMBL_CONFIG, or the per-user config.toml)."""
    try:
        return ClientSettings()
    except (ValidationError, ValueError, OSError) as exc:
        print(f"onsembl-tui: cannot read the settings: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from exc


def resolve(
    server: str | None, token: str | None, path: Path | None = None
) -> tuple[str, TokenSource | None]:
    """The hub and the token: the flag, the environment, the settings file (read only when the
    first two leave something unset), the credentials file of ``login``. A token in the settings
    file is used only when there are no credentials for that hub, and never an agent's (the file
    is the wrapper's too)."""
    server = server or os.environ.get("ONSEMBL_SERVER_URL") or ""
    token = token or os.environ.get("ONSEMBL_TOKEN") or ""
    shared = _shared_settings() if not (server and token) else None
    saved = creds.load(path)
    if not server:
        server = (shared.server_url if shared else "") or (saved.server_url if saved else DEFAULT_SERVER)
    if token:
        return server, TokenSource(token)
    if saved is not None and saved.server_url.rstrip("/") == server.rstrip("/"):
        return server, RefreshingTokenSource(saved, path)
    token = shared.token_text() if shared else ""
    if token and _claims_kind(token) != "agent":
        return server, TokenSource(token)
    return server, None


def _claims_kind(token: str) -> str:
    try:
        return str(token_claims(token).get("typ", ""))
    except ValueError:
        return ""


def run(server: str, tokens: TokenSource) -> None:
    from tui.app import OnsemblApp
    from tui.config import TuiSettings

    try:
        settings = TuiSettings()
    except ValidationError as exc:
        print(f"onsembl-tui: bad TUI settings: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from exc
    OnsemblApp(server_url=server, tokens=tokens, settings=settings).run()


def launch(server: str, token: str) -> None:
    """Used by ``onsembl up``: the TUI, signed in with a token the launcher minted."""
    run(server, TokenSource(token))


def login_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="onsembl-tui login", description="Sign in by one-time code or magic link."
    )
    parser.add_argument("email")
    parser.add_argument("--server", help="hub base URL")
    parser.add_argument("--code", help="the 6-digit code or the magic link (asked for when not given)")
    parser.add_argument("--credentials", type=Path, help="where to keep the tokens (0600)")
    args = parser.parse_args(argv)
    server = args.server or os.environ.get("ONSEMBL_SERVER_URL") or _shared_settings().server_url
    server = (server or DEFAULT_SERVER).rstrip("/")
    try:
        MagicLinkRequest(email=args.email)
    except ValidationError:
        print(f"onsembl-tui login: {args.email!r} is not an email address", file=sys.stderr)
        return EXIT_CONFIG
    try:
        with httpx.Client(base_url=server, timeout=15) as http:
            response = http.post("/v1/auth/magic-link", json={"email": args.email})
            if response.status_code >= 400:
                print(f"onsembl-tui login: the hub refused: {_message(response)}", file=sys.stderr)
                return 1
            answer = args.code
            if not answer:
                print(
                    f"A sign-in code was sent to {args.email} (without SMTP the hub prints it in its log).",
                    file=sys.stderr,
                )
                answer = input("Code or magic link: ").strip()
            verify = _verify_request(args.email, answer)
            if verify is None:
                print("onsembl-tui login: that is neither a 6-digit code nor a magic link", file=sys.stderr)
                return EXIT_CONFIG
            response = http.post("/v1/auth/verify", json=verify.wire())
            if response.status_code >= 400:
                print(f"onsembl-tui login: {_message(response)}", file=sys.stderr)
                return 1
            pair = TokenPair.model_validate(response.json())
    except httpx.HTTPError as exc:
        print(f"onsembl-tui login: cannot reach the hub at {server} ({exc})", file=sys.stderr)
        return 1
    path = creds.save(creds.Credentials.from_pair(server, pair), args.credentials)
    print(f"Signed in to {server} as {pair.email}; credentials in {path} (mode 0600).")
    return 0


def _verify_request(email: str, answer: str) -> VerifyRequest | None:
    if answer.isdigit() and len(answer) == 6:
        return VerifyRequest(email=email, code=answer)
    token = parse_qs(urlparse(answer).query).get("token", [""])[0] if "://" in answer else answer
    try:
        return VerifyRequest(token=token) if token else None
    except ValidationError:
        return None


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text))
    except ValueError:
        return response.text[:200] or f"HTTP {response.status_code}"


if __name__ == "__main__":
    main()
