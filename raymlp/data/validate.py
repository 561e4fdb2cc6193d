"""Check rows against `data.schema`: cast to the declared types, keep bad rows aside with reasons."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from raymlp.config.schema import ColumnSpec, SchemaConfig
from raymlp.errors import WorkFailed

from .csvfile import REASON_COLUMN, ROW_COLUMN, SOURCE_COLUMN

_MAX_REASONS_SHOWN = 20

_ARROW_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date": pa.date32(),
    "datetime": pa.timestamp("us"),
}


@dataclass
class Checked:
    """Rows that passed, rows set aside (with `_raymlp_row` and `_raymlp_reason`), and the count of each."""

    good: pa.Table
    quarantined: pa.Table | None
    #: per column with a `unique` rule: its distinct non-null values (converted) over all rows
    unique_values: dict[str, pd.Series] = field(default_factory=dict)

    @property
    def quarantined_rows(self) -> int:
        return 0 if self.quarantined is None else self.quarantined.num_rows


def _cast(values: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, np.ndarray]:
    """Values converted to the declared type, and a mask of values that could not be."""
    present = values.notna().to_numpy()
    if spec.type in ("int", "float"):
        converted = pd.to_numeric(values, errors="coerce")
        bad = present & converted.isna().to_numpy()
        if spec.type == "int":
            whole = converted.dropna()
            not_whole = np.zeros(len(values), dtype=bool)
            not_whole[np.flatnonzero(converted.notna().to_numpy())] = (whole != np.floor(whole)).to_numpy()
            bad |= not_whole
            converted = converted.where(~bad).round().astype("Int64")
        return converted, bad
    if spec.type == "bool":
        mapping = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}
        converted = values.map(
            lambda v: v if isinstance(v, (bool, np.bool_)) else mapping.get(str(v).strip().lower()), na_action="ignore"
        )
        return converted, present & converted.isna().to_numpy()
    if spec.type in ("date", "datetime"):
        converted = pd.to_datetime(values, errors="coerce")
        return converted, present & converted.isna().to_numpy()
    converted = values.map(str, na_action="ignore")
    return converted, np.zeros(len(values), dtype=bool)


def check_rows(
    table: pa.Table,
    schema: SchemaConfig,
    row_ids: np.ndarray | None = None,
    row_sources: np.ndarray | None = None,
    seen: Mapping[str, Collection] | None = None,
) -> Checked:
    """Apply the schema; raise `WorkFailed` with the first reasons when on_error is 'fail'.

    `row_ids` (line or record numbers) and `row_sources` (files) say where each row came from;
    `seen` holds, per `unique` column, values that earlier pieces of the same source already had.
    """
    missing = [name for name in schema.columns if name not in table.column_names]
    if missing:
        raise WorkFailed(
            f"data.schema names columns the source does not have: {', '.join(missing)} "
            f"(source columns: {', '.join(table.column_names)})"
        )
    frame = table.to_pandas()
    rows = np.arange(1, len(frame) + 1) if row_ids is None else row_ids
    reasons: list[list[str]] = [[] for _ in range(len(frame))]
    converted: dict[str, pd.Series] = {}
    unique_values: dict[str, pd.Series] = {}

    def flag(mask: np.ndarray, reason: str) -> None:
        for index in np.flatnonzero(mask):
            reasons[index].append(reason)

    for name, spec in schema.columns.items():
        original = frame[name]
        values, bad_type = _cast(original, spec)
        flag(bad_type, f"{name}: not a valid {spec.type}")
        null = values.isna().to_numpy() & ~bad_type
        if not spec.nullable:
            flag(null, f"{name}: null is not allowed")
        if spec.min is not None:
            flag((values < spec.min).fillna(False).to_numpy(dtype=bool), f"{name}: below min {spec.min:g}")
        if spec.max is not None:
            flag((values > spec.max).fillna(False).to_numpy(dtype=bool), f"{name}: above max {spec.max:g}")
        if spec.allowed is not None:
            allowed = {str(value) for value in spec.allowed}
            outside = values.notna().to_numpy() & ~values.astype(str).isin(allowed).to_numpy()
            flag(outside, f"{name}: not one of {', '.join(sorted(allowed))}")
        if spec.unique:
            repeated = values.duplicated(keep="first") & values.notna()
            if seen and seen.get(name):
                repeated |= values.isin(list(seen[name]))
            flag(repeated.to_numpy(dtype=bool), f"{name}: duplicate value")
            unique_values[name] = values[values.notna()].drop_duplicates()
        converted[name] = values

    bad = np.array([bool(found) for found in reasons], dtype=bool)
    if bad.any() and schema.on_error == "fail":
        where = (lambda i: f"{row_sources[i]}:{rows[i]}") if row_sources is not None else (lambda i: f"row {rows[i]}")
        shown = [f"{where(i)}: {'; '.join(reasons[i])}" for i in np.flatnonzero(bad)[:_MAX_REASONS_SHOWN]]
        raise WorkFailed(
            f"{int(bad.sum())} of {len(frame)} rows break data.schema (on_error: fail); first reasons:\n  "
            + "\n  ".join(shown)
        )
    good_frame = frame.loc[~bad].copy()
    fields = []
    for name in frame.columns:
        if name in converted:
            good_frame[name] = converted[name].loc[~bad]
            fields.append(pa.field(name, _ARROW_TYPES[schema.columns[name].type], nullable=True))
        else:
            fields.append(table.schema.field(name))
    good = pa.Table.from_pandas(good_frame, schema=pa.schema(fields), preserve_index=False)
    quarantined = None
    if bad.any():
        aside = frame.loc[bad].astype(str).where(frame.loc[bad].notna(), None)
        aside.insert(0, REASON_COLUMN, ["; ".join(reasons[i]) for i in np.flatnonzero(bad)])
        aside.insert(0, ROW_COLUMN, rows[bad])
        if row_sources is not None:
            aside.insert(0, SOURCE_COLUMN, row_sources[bad])
        quarantined = pa.Table.from_pandas(aside, preserve_index=False)
    return Checked(good=good, quarantined=quarantined, unique_values=unique_values)
