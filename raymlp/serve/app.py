"""A Ray Serve application that answers predictions from a model package."""


import math
from typing import Any, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from ray import serve

api = FastAPI(title="raymlp model endpoint", docs_url=None, redoc_url=None)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return value


@serve.deployment(name="model")
@serve.ingress(api)
class ModelServer:
    """One replica: the package loaded once, predictions per request (optionally batched)."""

    def __init__(self, package_path: str, metadata: dict[str, Any], batching: Optional[dict[str, Any]] = None):
        from raymlp.train.package import load_package

        self.package = load_package(package_path)
        self.metadata = metadata
        if batching:
            self._predict_batched.set_max_batch_size(batching["max_batch_size"])
            self._predict_batched.set_batch_wait_timeout_s(batching["wait_timeout_ms"] / 1000.0)
        self.batching = bool(batching)

    def _predict_frame(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import pandas as pd

        frame = pd.DataFrame.from_records(records)
        result = self.package.predict(frame)
        rows = []
        for _, row in result.iterrows():
            item: dict[str, Any] = {"prediction": _json_safe(row["prediction"])}
            probabilities = {column.removeprefix("probability_"): _json_safe(row[column])
                             for column in result.columns if column.startswith("probability_")}
            if probabilities:
                item["probabilities"] = probabilities
            rows.append(item)
        return rows

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _predict_batched(self, requests: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        flat = [record for records in requests for record in records]
        answers = self._predict_frame(flat)
        out, start = [], 0
        for records in requests:
            out.append(answers[start : start + len(records)])
            start += len(records)
        return out

    @api.get("/health")
    def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/metadata")
    def describe(self) -> dict[str, Any]:
        return {**self.metadata, "features": self.package.features, "classes": self.package.classes,
                "task": self.package.description["task"], "lineage": self.package.description["lineage"]}

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(status_code=400, detail="the body is not JSON") from None
        records = body.get("records", body) if isinstance(body, dict) and "records" in body else body
        single = isinstance(records, dict)
        records = [records] if single else records
        if not isinstance(records, list) or not records or not all(isinstance(item, dict) for item in records):
            raise HTTPException(status_code=422, detail="send one record (a JSON object) or a non-empty list of them")
        names = self.package.feature_names
        for index, record in enumerate(records):
            missing = [name for name in names if name not in record]
            if missing:
                where = "" if single else f"record {index}: "
                raise HTTPException(status_code=422, detail=f"{where}missing field(s): {', '.join(missing)}")
        try:
            answers = await self._predict_batched(records) if self.batching else self._predict_frame(records)
        except Exception:
            raise HTTPException(status_code=500, detail="prediction failed; see the replica's log") from None
        payload: dict[str, Any] = {"model": self.metadata.get("model"), "version": self.metadata.get("version")}
        payload.update(answers[0] if single else {"predictions": answers})
        return JSONResponse(payload)


def build_app(package_path: str, metadata: dict[str, Any], serve_config: Any) -> Any:
    """The Serve application for a package, with replicas, autoscaling and batching from the job."""
    options: dict[str, Any] = {"ray_actor_options": {"num_cpus": 0.5}}
    if serve_config.autoscaling is not None:
        options["autoscaling_config"] = serve_config.autoscaling.model_dump()
    else:
        options["num_replicas"] = serve_config.num_replicas or 1
    batching = serve_config.batching.model_dump() if serve_config.batching else None
    return ModelServer.options(**options).bind(package_path, metadata, batching)
