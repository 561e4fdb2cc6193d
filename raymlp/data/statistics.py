"""Per-column statistics that can be computed piece by piece and merged (a streaming convert
computes them on each range of the input)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

#: Distinct values are counted exactly up to this many; beyond it a column says "more than".
DISTINCT_LIMIT = 10_000
_NAN = "NaN"  # every NaN is one distinct value (NaN != NaN would count each apart)


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def partial_statistics(table: pa.Table) -> dict[str, dict[str, Any]]:
    """Mergeable statistics of one piece of a table (see `merge_statistics`, `finish_statistics`)."""
    import pyarrow.compute as pc

    pieces: dict[str, dict[str, Any]] = {}
    for field in table.schema:
        column = table.column(field.name)
        entry: dict[str, Any] = {
            "rows": len(column),
            "nulls": column.null_count,
            "distinct": None,
            "min": None,
            "max": None,
            "sum": 0.0,
            "count": len(column) - column.null_count,
        }
        if len(pc.unique(column.slice(0, 4 * DISTINCT_LIMIT))) <= DISTINCT_LIMIT:
            values = pc.unique(column)  # a cheap look at the first rows spares this for id-like columns
            if len(values) <= DISTINCT_LIMIT:
                entry["distinct"] = {_NAN if value != value else value for value in values.drop_null().to_pylist()}
        if (_is_number(field.type) or pa.types.is_temporal(field.type)) and entry["count"]:
            bounds = pc.min_max(column)
            entry["min"], entry["max"] = bounds["min"].as_py(), bounds["max"].as_py()
            if _is_number(field.type):
                numbers = column.cast(pa.float64())
                if pa.types.is_floating(field.type):  # NaN is not a number to average: skipped, like nulls
                    numbers = pc.drop_null(pc.if_else(pc.is_nan(numbers), None, numbers))
                    entry["count"] = len(numbers)
                entry["sum"] = pc.sum(numbers).as_py() or 0.0
        pieces[field.name] = entry
    return pieces


def merge_statistics(into: dict[str, dict[str, Any]], piece: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Fold `piece` into `into` (both from `partial_statistics`); returns `into`."""
    for name, entry in piece.items():
        total = into.get(name)
        if total is None:
            into[name] = {**entry, "distinct": None if entry["distinct"] is None else set(entry["distinct"])}
            continue
        for key in ("rows", "nulls", "count", "sum"):
            total[key] += entry[key]
        if total["distinct"] is not None and entry["distinct"] is not None:
            total["distinct"] |= entry["distinct"]
            if len(total["distinct"]) > DISTINCT_LIMIT:
                total["distinct"] = None
        else:
            total["distinct"] = None
        for key, pick in (("min", min), ("max", max)):
            if entry[key] is not None:
                total[key] = entry[key] if total[key] is None else pick(total[key], entry[key])
    return into


def finish_statistics(merged: dict[str, dict[str, Any]], schema: pa.Schema) -> dict[str, dict[str, Any]]:
    """The manifest's `statistics`: nulls and distinct values (or `distinct_over` when there are
    more than `DISTINCT_LIMIT`); min, max and mean for numbers; min and max for dates and times."""
    statistics: dict[str, dict[str, Any]] = {}
    for field in schema:
        entry = merged.get(field.name)
        if entry is None:
            continue
        shown: dict[str, Any] = {"nulls": entry["nulls"]}
        if entry["distinct"] is None:
            shown["distinct_over"] = DISTINCT_LIMIT
        else:
            shown["distinct"] = len(entry["distinct"])
        if _is_number(field.type):
            mean = float(f"{entry['sum'] / entry['count']:.12g}") if entry["count"] else None  # sums in any order agree
            shown.update({"min": entry["min"], "max": entry["max"], "mean": mean})
        elif pa.types.is_temporal(field.type):
            shown.update(
                {
                    "min": None if entry["min"] is None else str(entry["min"]),
                    "max": None if entry["max"] is None else str(entry["max"]),
                }
            )
        statistics[field.name] = shown
    return statistics


def column_statistics(table: pa.Table) -> dict[str, dict[str, Any]]:
    """The manifest's `statistics` of a whole table."""
    return finish_statistics(partial_statistics(table), table.schema)
