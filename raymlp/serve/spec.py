"""What an endpoint's replicas are told: the model, the traffic split, limits, keys (plain JSON)."""

import hashlib
from typing import Any

from pydantic import BaseModel, Field

VERSION_HEADER = "x-raymlp-model-version"
REQUEST_ID_HEADER = "x-request-id"


class EndpointSpec(BaseModel):
    """Everything a replica needs; plain JSON, so `raymlp serve build` can write it into a Serve config."""

    model: str = Field(description="Registered model name (or the job name for an unregistered package).")
    traffic: dict[str, float] = Field(description="Alias, version or package label -> share of requests.")
    packages: dict[str, str] = Field(default_factory=dict, description="Fixed package folders by label (no registry).")
    tracking_uri: str | None = None
    storage_root: str | None = None
    cache_dir: str | None = None
    follow_aliases_s: float = 5.0
    batching: dict[str, float] | None = None
    max_body_bytes: int = 1 << 20
    max_records: int = 10_000
    api_key_sha256: list[str] = Field(default_factory=list)
    api_keys_env: str | None = None
    run_id: str | None = None
    job: str | None = Field(
        default=None, description="The raymlp job serving it (metrics' `job` tag; default: the app's name)."
    )
    route: str | None = Field(default=None, description="The app's route prefix (metrics' `route` tag).")
    shadow: str | None = Field(
        default=None,
        description="A version or alias scored on a copy of every request after the answer (serve.shadow).",
    )
    capture: dict[str, Any] | None = Field(
        default=None, description="serve.capture as `serve.capture.CaptureSettings` values (None: capture is off)."
    )


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
