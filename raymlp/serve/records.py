"""A request body to validated records (or a RequestProblem naming what is wrong), and records to answers."""

import math
from typing import Any

from pydantic import BaseModel, Field

MAX_LISTED_ERRORS = 20


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return value


class RequestProblem(Exception):
    """A request the endpoint refuses: an HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


#: What a number feature may be: the model takes its features as float32 (`train.features.feature_matrix`);
#: ints are bounded to int64. Beyond, a request is refused (422) where the schema says so.
NUMBER_BOUNDS: dict[str, int | float] = {"float": 3.4028234663852886e38, "int": 9223372036854775807}


def record_model(features: list[dict[str, Any]]) -> type[BaseModel]:
    """A pydantic model of one record: every feature required, with its type; nothing else allowed."""
    import datetime

    from pydantic import ConfigDict, create_model

    kinds: dict[str, Any] = {
        "int": int,
        "float": float,
        "bool": bool,
        "string": str,
        "date": datetime.date,
        "datetime": datetime.datetime,
    }
    fields: dict[str, Any] = {}
    for feature in features:
        kind = kinds.get(feature["type"], str)
        lax = feature["type"] in ("date", "datetime")  # ISO text in JSON
        bound = NUMBER_BOUNDS.get(feature["type"])
        limits: dict[str, Any] = {"ge": -bound, "le": bound} if bound else {}
        fields[f"f{len(fields)}"] = (kind, Field(alias=feature["name"], strict=False if lax else None, **limits))
    return create_model(
        "Record",
        __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=False),
        **fields,
    )


def _error_entries(error: Any, single: bool) -> list[dict[str, Any]]:
    entries = []
    for item in error.errors(include_url=False)[:MAX_LISTED_ERRORS]:
        location = list(item.get("loc", ()))
        entry: dict[str, Any] = {"message": item["msg"]}
        bound = (item.get("ctx") or {}).get("le", (item.get("ctx") or {}).get("ge"))
        if item["type"] in ("less_than_equal", "greater_than_equal") and isinstance(bound, (int, float)):
            entry["message"] = (
                f"Input should be {'at most' if item['type'] == 'less_than_equal' else 'at least'} {bound:.9g}"
            )
        if not single and location and isinstance(location[0], int):
            entry["record"] = location.pop(0)
        if location:
            entry["field"] = ".".join(str(part) for part in location)
        entries.append(entry)
    return entries


def _describe(entries: list[dict[str, Any]]) -> str:
    parts = []
    for entry in entries:
        where = []
        if "record" in entry:
            where.append(f"record {entry['record']}")
        if "field" in entry:
            where.append(f"field '{entry['field']}'")
        parts.append(f"{', '.join(where)}: {entry['message']}" if where else entry["message"])
    return "; ".join(parts)


class RecordParser:
    """Turns a request body into validated records, or a RequestProblem that says what is wrong."""

    def __init__(self, features: list[dict[str, Any]], max_records: int, max_body_bytes: int | None = None):
        from pydantic import TypeAdapter

        self.names = [feature["name"] for feature in features]
        self.features = features
        self.max_body_bytes = max_body_bytes
        self.model = record_model(features)
        self.single = TypeAdapter(self.model)
        self.many = TypeAdapter(list[self.model])  # type: ignore[valid-type, name-defined]
        self.max_records = max_records

    def parse(self, body: bytes) -> tuple[list[dict[str, Any]], bool]:
        """(records as plain dicts, whether the body was one record)."""
        import json

        from pydantic import ValidationError

        start = body.lstrip()[:1]
        if start not in (b"{", b"["):
            try:
                json.loads(body)
            except ValueError:
                raise RequestProblem(400, "the body is not JSON") from None
            raise RequestProblem(422, "send one record (a JSON object) or a list of records")
        single = start == b"{"
        try:
            parsed: Any = self.single.validate_json(body) if single else self.many.validate_json(body)
        except ValidationError as error:
            if any(item["type"] == "json_invalid" for item in error.errors()):
                raise RequestProblem(400, f"the body is not JSON: {error.errors()[0]['msg']}") from None
            entries = _error_entries(error, single)
            raise RequestProblem(422, _describe(entries), entries) from None
        items = [parsed] if single else parsed
        if not items:
            raise RequestProblem(422, "the list of records is empty; send at least one record")
        if len(items) > self.max_records:
            raise RequestProblem(413, f"{len(items)} records in one request; at most {self.max_records} are allowed")
        return [item.model_dump(by_alias=True) for item in items], single

    def openapi_body(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(request body schema, component schemas) for /openapi.json."""
        import json

        record = self.model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        reference = {"$ref": "#/components/schemas/Record"}
        most = self.max_records
        if self.max_body_bytes:  # no longer list fits in the byte limit, even of the shortest records
            shortest = {"bool": False, "string": "", "date": "2000-01-01", "datetime": "2000-01-01T00:00:00"}
            one = json.dumps({f["name"]: shortest.get(f["type"], 0) for f in self.features}, separators=(",", ":"))
            most = max(1, min(most, (self.max_body_bytes - 1) // (len(one.encode()) + 1)))
        body = {"anyOf": [reference, {"type": "array", "items": reference, "minItems": 1, "maxItems": most}]}
        return body, {"Record": record}


def answers_for(package: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSON answer of each record: its prediction, and class probabilities for a classifier."""
    import numpy as np

    result = package.predict_table(package.records_table(records))
    predictions = [_json_safe(value) for value in result.column("prediction").to_pylist()]
    columns = [column for column in result.column_names if column.startswith("probability_")]
    if not columns:
        return [{"prediction": value} for value in predictions]
    names = [column.removeprefix("probability_") for column in columns]
    rows = np.column_stack([result.column(column).to_numpy() for column in columns]).astype("float64").tolist()
    return [
        {"prediction": value, "probabilities": {name: _json_safe(p) for name, p in zip(names, row)}}
        for value, row in zip(predictions, rows)
    ]
