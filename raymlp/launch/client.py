"""Reach a Ray cluster's Jobs API from anywhere (a laptop, CI): its address, its token, its client.

Ray's own client sends a token only when its process runs with `RAY_AUTH_MODE=token`; a laptop
rarely does, so raymlp finds the token the way Ray does and sends it itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raymlp import settings
from raymlp.errors import UsageError, WorkFailed
from raymlp.runtime.tokens import (
    Token,
    find_token,
)

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"

HOW_TO_SUPPLY_A_TOKEN = (
    "give raymlp the cluster's token: set RAY_AUTH_TOKEN=<token>, or RAY_AUTH_TOKEN_PATH=<file>, "
    "or put it in ~/.ray/auth_token (on the head node `ray get-auth-token` prints it; on KubeRay it is "
    "the Secret named in spec.authOptions). Ray's own CLI also needs RAY_AUTH_MODE=token"
)


@dataclass(frozen=True)
class Cluster:
    """A connected Jobs API client and what raymlp learned about the cluster."""

    client: JobSubmissionClient
    dashboard_url: str
    token: Token | None
    requires_token: bool | None


def submission_address(address: str | None) -> str:
    """The Jobs API address: --address, else RAY_ADDRESS; `HOST:8265` gets http:// added."""
    address = (address or settings.ray_address() or "").strip().rstrip("/")
    if not address:
        raise UsageError("no cluster named: pass --address http://HEAD:8265 (the Ray dashboard) or set RAY_ADDRESS")
    if "://" not in address and address.endswith(":8265"):
        address = f"http://{address}"
    return address


def connect(address: str | None, *, warn_unauthenticated: bool = True) -> Cluster:
    """A Jobs API client for the cluster at `address`, sending the token when there is one."""
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = submission_address(address)
    token = find_token()
    headers = {"Authorization": f"Bearer {token.value}"} if token else {}
    try:
        with _address_as_given():
            client = JobSubmissionClient(url, headers=headers)
    except AuthenticationError as error:
        raise WorkFailed(_refusal(url, token, str(error))) from None
    except (ConnectionError, requests.exceptions.RequestException) as error:
        raise WorkFailed(f"cannot reach the Ray dashboard at {url}: {error}") from None
    except ValueError as error:  # Ray's address parser
        raise UsageError(f"--address {url}: {error}") from None
    dashboard = client.get_address()
    requires = _requires_token(dashboard, headers)
    if requires is False and warn_unauthenticated:
        print(
            f"warning: the Ray cluster at {dashboard} accepts jobs without a token: anyone who can reach "
            "its dashboard can run code there. Start it with RAY_AUTH_MODE=token (as the files in clusters/ do; "
            "https://docs.ray.io/en/latest/ray-security/token-auth.html).",
            file=sys.stderr,
        )
    return Cluster(client=client, dashboard_url=dashboard, token=token, requires_token=requires)


@contextmanager
def _address_as_given() -> Iterator[None]:
    """Ray's client lets RAY_API_SERVER_ADDRESS, then RAY_ADDRESS, override the address it is given;
    raymlp already chose (--address, else RAY_ADDRESS), so neither may redirect it elsewhere."""
    saved = {name: os.environ.pop(name) for name in (API_SERVER_ENV, settings.RAY_ADDRESS_ENV) if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _refusal(url: str, token: Token | None, detail: str) -> str:
    first = detail.strip().splitlines()[0] if detail.strip() else "refused"
    if token is None:
        return f"the Ray cluster at {url} requires a token and none was found ({first}): {HOW_TO_SUPPLY_A_TOKEN}"
    return (
        f"the Ray cluster at {url} refused the token from {token.source} ({first}): "
        f"check that it is this cluster's token; {HOW_TO_SUPPLY_A_TOKEN}"
    )


def _requires_token(dashboard: str, headers: dict[str, str]) -> bool | None:
    """Whether the cluster checks tokens (Ray's /api/authentication_mode); None when it cannot say."""
    import requests

    try:
        reply = requests.get(f"{dashboard}/api/authentication_mode", headers=headers, timeout=10)
        mode = reply.json().get("authentication_mode") if reply.ok else None
    except (requests.exceptions.RequestException, ValueError):
        return None
    return {"token": True, "disabled": False}.get(mode)  # type: ignore[arg-type]


def guard(call, url: str, token: Token | None):
    """Run a Jobs API call, turning Ray's refusals and lost connections into one-line errors."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        return call()
    except AuthenticationError as error:
        raise WorkFailed(_refusal(url, token, str(error))) from None
    except (ConnectionError, requests.exceptions.ConnectionError) as error:
        raise WorkFailed(f"lost the Ray dashboard at {url}: {error}") from None
