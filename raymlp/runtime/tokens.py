"""Ray's auth token as a process finds it, and the dashboard link as raymlp prints it.

Ray's own client sends a token only when its process runs with `RAY_AUTH_MODE=token`; raymlp finds
the token the way Ray does (`find_token`) and names where it is, never its value (`dashboard_line`).
`raymlp.launch.client` sends it to a cluster's Jobs API; `ray_runtime` prints the embedded Ray's link.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from raymlp import ray_internals
from raymlp.errors import UsageError

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


@dataclass(frozen=True)
class Token:
    """A Ray auth token and where it was found (the value is never printed)."""

    value: str
    source: str


def find_token() -> Token | None:
    """The token, looked up in Ray's own order: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return Token(value, TOKEN_ENV)
    for path, source in (
        (os.environ.get(TOKEN_PATH_ENV), TOKEN_PATH_ENV),
        (str(Path.home() / ".ray" / "auth_token"), "~/.ray/auth_token"),
    ):
        if not path:
            continue
        try:
            value = Path(path).expanduser().read_text().strip()
        except OSError:
            if source == TOKEN_PATH_ENV:
                raise UsageError(f"{TOKEN_PATH_ENV}={path}: cannot read the token file") from None
            continue
        if value:
            return Token(value, source if source != TOKEN_PATH_ENV else f"{TOKEN_PATH_ENV} ({path})")
    return None


def dashboard_line(url: str, token: Token | None, token_auth: bool | None) -> str:
    """`url`, and when the cluster checks tokens, how to get past the token prompt its dashboard
    shows in a browser: where the token is and `ray get-auth-token`, never the token itself."""
    if not token_auth:
        return url
    if token is None:
        return f"{url} (the dashboard asks for a token: on the head node `ray get-auth-token` prints it)"
    if token.source == TOKEN_ENV:
        where = f"${TOKEN_ENV}"
    else:
        where = token.source.removeprefix(f"{TOKEN_PATH_ENV} (").rstrip(")")
    return f"{url} (the dashboard asks for a token: `ray get-auth-token` prints it; it is in {where})"


def local_token_auth() -> bool:
    """Whether the Ray this process started or joined checks tokens (Ray sets RAY_AUTH_MODE=token in
    the process that starts a local cluster with token auth, the 2.60 default)."""
    mode = os.environ.get("RAY_AUTH_MODE", "").lower()
    if mode:  # said outright: Ray's own setting for this process
        return mode == "token"
    try:
        return ray_internals.token_auth_mode()
    except Exception:  # an older Ray, or none connected: say nothing rather than something wrong
        return False
