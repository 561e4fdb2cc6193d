"""The `register`, `serve` and `predict` sections."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import Location, Name, Section
from .environments import _STAGE_ENV_HELP, EnvRef

REQUIREMENT_PATTERN = re.compile(r"^\s*(>=|<=|>|<|==)\s*(-?\d+(\.\d+)?([eE][-+]?\d+)?)\s*$")


class ChampionGateConfig(Section):
    metric: str = Field(
        description="The metric both models are scored by on this run's test split, by the same code "
        "(accuracy, f1, roc_auc, loss for classifiers; rmse, mae, r2 for regressors).",
        pattern=r"^(test_)?(accuracy|f1|roc_auc|loss|rmse|mae|r2)$",
    )
    max_drop: float = Field(
        default=0.0,
        ge=0,
        le=1e12,
        description="How much worse than the champion the candidate may be and still take the alias.",
    )


class RegisterConfig(Section):
    model: Name = Field(description="Registered model name in MLflow.")
    alias: str | None = Field(
        default=None,
        description="Alias moved to the new version when `require` holds.",
        pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,254}$",
    )
    require: dict[str, str] = Field(
        default_factory=dict, description='Gate: metric -> comparison, e.g. {test_accuracy: ">= 0.9"}.'
    )
    beat_champion: ChampionGateConfig | None = Field(
        default=None,
        description="Gate: the candidate, scored with the alias's current holder on the same held-out test "
        "split, may be worse by at most max_drop (TFX's change threshold; `require` is the value threshold).",
    )

    @field_validator("require")
    @classmethod
    def _comparisons_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for metric, rule in value.items():
            if not REQUIREMENT_PATTERN.match(str(rule)):
                raise ValueError(f"require.{metric}: '{rule}' is not a comparison like '>= 0.9' (>=, <=, >, <, ==)")
        return value


class AutoscalingConfig(Section):
    min_replicas: int = Field(default=1, ge=0, le=10_000, description="Fewest replicas.")
    max_replicas: int = Field(default=1, ge=1, le=10_000, description="Most replicas.")
    target_ongoing_requests: float = Field(default=2.0, gt=0, le=10_000, description="Requests per replica to aim for.")

    @model_validator(mode="after")
    def _min_not_above_max(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class BatchingConfig(Section):
    max_batch_size: int = Field(default=256, ge=1, le=1_000_000, description="Most records scored in one model call.")
    wait_timeout_ms: float = Field(
        default=0.0,
        ge=0,
        le=60_000,
        description="Longest wait for more requests before scoring (0: score at once; requests that arrive meanwhile form the next batch).",
    )


class CaptureConfig(Section):
    sample: float = Field(default=1.0, gt=0, le=1, description="Share of requests captured (1: every one).")
    flush_s: float = Field(
        default=10.0, gt=0, le=3600, description="How often a replica writes what it captured (at most this is lost)."
    )
    max_buffer_rows: int = Field(
        default=100_000,
        ge=1,
        le=100_000_000,
        description="Records a replica holds between writes; beyond, requests are answered but not captured (counted).",
    )
    exclude: list[str] = Field(default_factory=list, description="Features never written to the capture.")


class ServeConfig(Section):
    route: str = Field(
        default="/", description="Route prefix of the endpoint; starts with '/'.", pattern=r"^/[\w\-./]*$"
    )
    host: str = Field(default="127.0.0.1", min_length=1, description="Address the HTTP proxy listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    ingress: Literal["haproxy", "proxy"] = Field(
        default="haproxy",
        description="haproxy: Serve's HAProxy ingress, straight to the replicas' own ports (fast); "
        "proxy: Serve's Python HTTP proxy. Fixed when Serve first starts on a cluster.",
    )
    access_log: bool = Field(default=False, description="Log every request in the replicas' logs (costs throughput).")
    num_replicas: int | None = Field(default=None, ge=1, le=10_000, description="Fixed replica count.")
    autoscaling: AutoscalingConfig | None = Field(default=None, description="Replica autoscaling.")
    batching: BatchingConfig | None = Field(
        default_factory=BatchingConfig, description="Request batching (null: every request is scored on its own)."
    )
    traffic: dict[str, float] | None = Field(
        default=None,
        description="Share of requests per alias or version of the registered model, e.g. {champion: 90, challenger: 10} "
        "(default: the register alias takes all). Replicas follow alias moves.",
    )
    shadow: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$",
        description="A version or alias of the model that gets a copy of every request, scored after the answer "
        "is sent (fire-and-forget): answers and their latency are unchanged; its answers are captured under the "
        "same request ids (source: shadow) when capture is on, and counted as agreeing or not.",
    )
    follow_aliases_s: float = Field(
        default=5.0, gt=0, le=3600, description="How often replicas look up where the aliases point."
    )
    cpus_per_replica: float = Field(default=0.5, gt=0, le=1024, description="CPUs each replica holds.")
    gpus_per_replica: float = Field(default=0, ge=0, le=64, description="GPUs each replica holds (torch, tensorflow).")
    max_ongoing_requests: int = Field(default=32, ge=1, le=100_000, description="Requests a replica works on at once.")
    max_queued_requests: int = Field(
        default=256, ge=-1, le=1_000_000, description="Requests waiting for a replica before HTTP 503 (-1: unbounded)."
    )
    request_timeout_s: float | None = Field(
        default=30.0, gt=0, le=86_400, description="Longest a request may take (HTTP 408 after)."
    )
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, le=1 << 30, description="Largest request body (HTTP 413 beyond)."
    )
    max_records: int = Field(default=10_000, ge=1, le=10_000_000, description="Most records in one request.")
    api_keys_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the accepted API keys, comma-separated (HTTP 401 without one).",
    )
    env: EnvRef | None = Field(default=None, description=_STAGE_ENV_HELP + " Used by the endpoint's replicas.")
    capture: CaptureConfig | None = Field(
        default=None,
        description="Capture what the endpoint is sent and answers, as Parquet under storage.root/captures "
        "(for `raymlp monitor`); off when absent.",
    )

    @model_validator(mode="after")
    def _fixed_or_autoscaled(self) -> ServeConfig:
        if self.num_replicas is not None and self.autoscaling is not None:
            raise ValueError("give num_replicas or autoscaling, not both")
        if self.traffic is not None:
            if not self.traffic:
                raise ValueError("traffic: name at least one alias or version")
            if any(share < 0 for share in self.traffic.values()) or sum(self.traffic.values()) <= 0:
                raise ValueError("traffic: shares are numbers >= 0 that add up to more than 0")
        return self


class PredictConfig(Section):
    input: Location = Field(
        min_length=1, description="csv/parquet/json file, folder or glob to score, or objects in a bucket (s3://...)."
    )
    output: Location = Field(min_length=1, description="Output file (.csv, .parquet) or folder, local or in a bucket.")
    batch_size: int | None = Field(default=None, ge=1, le=2**24, description="Rows per model call (default 65536).")
    env: EnvRef | None = Field(default=None, description=_STAGE_ENV_HELP + " Used by the reading and scoring tasks.")
