"""Column profiles: statistics of a table that are computed piece by piece (one Arrow block at a
time, on Ray Data's workers) and merged, and stored as JSON.

Per column: rows, missing values (nulls and NaN), and by kind
- numeric (ints, floats, decimals; dates and times as epoch microseconds): min, max, sum, sum of
  squares, a KLL quantile sketch (datasketches, k=`KLL_K`: its normalised rank error is stated in
  the profile), the exact values while the column has at most `EXACT_VALUES` of them, and exact
  value counts while it has at most `EXACT_CATEGORIES` distinct values;
- categorical (text, booleans): exact counts while at most `EXACT_CATEGORIES` distinct values,
  beyond that a frequent-items sketch; an HLL sketch estimates distinct values either way.
Exact pieces make drift tests on small data match scipy's numbers exactly; sketches keep memory
bounded on large data.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raymlp.data.preprocess import column_kind

KLL_K = 400
EXACT_VALUES = 50_000
EXACT_CATEGORIES = 1_000
FREQUENT_ITEMS_LG_K = 12
HLL_LG_K = 12
PROFILE_FORMAT = "raymlp.profile/1"


def _kind_of(arrow_type: Any) -> str:
    import pyarrow as pa

    if pa.types.is_boolean(arrow_type) or pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "categorical"
    if pa.types.is_dictionary(arrow_type):
        return "categorical"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "numeric"
    if pa.types.is_temporal(arrow_type):
        return "datetime"
    return "other"


def _pack(array: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.ascontiguousarray(array, dtype=np.float64).tobytes(), 1)).decode()


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.float64)


def _category(value: Any) -> str:
    """Categories are compared as text (a bool true is 'true', as JSON writes it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class ColumnProfile:
    """Mergeable statistics of one column (see the module's docstring)."""

    name: str
    kind: str  # numeric | categorical | datetime | other
    type: str  # int | float | bool | string | date | datetime | ...
    rows: int = 0
    missing: int = 0
    minimum: float | None = None
    maximum: float | None = None
    total: float = 0.0
    squares: float = 0.0
    values: np.ndarray | None = field(default_factory=lambda: np.empty(0))  # None: more than EXACT_VALUES
    counts: dict[str, int] | None = field(default_factory=dict)  # None: more than EXACT_CATEGORIES
    kll: Any = None
    frequent: Any = None
    hll: Any = None

    # --- building -----------------------------------------------------------------------------

    @property
    def present(self) -> int:
        return self.rows - self.missing

    def add(self, column: Any) -> None:
        """Add one Arrow column (array or chunked array) of this column's values."""
        import datasketches
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        self.rows += len(column)
        if self.kind in ("numeric", "datetime"):
            if self.kind == "datetime":
                column = column.cast(pa.timestamp("us")) if pa.types.is_date(column.type) else column
                column = column.cast(pa.int64())
            numbers = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            if column.null_count:
                numbers = numbers[np.asarray(column.is_valid())]
            finite = numbers[np.isfinite(numbers)]
            self.missing += len(column) - len(finite)
            if not len(finite):
                return
            low, high = float(finite.min()), float(finite.max())
            self.minimum = low if self.minimum is None else min(self.minimum, low)
            self.maximum = high if self.maximum is None else max(self.maximum, high)
            self.total += float(finite.sum())
            self.squares += float(np.dot(finite, finite))
            if self.kll is None:
                self.kll = datasketches.kll_doubles_sketch(KLL_K)
            self.kll.update(finite)
            if self.values is not None:
                self.values = (
                    np.concatenate([self.values, finite]) if len(self.values) + len(finite) <= EXACT_VALUES else None
                )
            if self.counts is not None:
                probe = np.unique(finite[:20_000])
                if len(probe) + len(self.counts) > 2 * EXACT_CATEGORIES or len(probe) > EXACT_CATEGORIES:
                    self.counts = None
                else:
                    uniques, counts = np.unique(finite, return_counts=True)
                    self._merge_counts({repr(float(value)): int(count) for value, count in zip(uniques, counts)})
            return
        self.missing += column.null_count
        if self.kind != "categorical":
            return
        valued = column.drop_null() if column.null_count else column
        if pa.types.is_dictionary(valued.type):
            valued = valued.cast(valued.type.value_type)
        counted = pc.value_counts(valued)
        found = {
            _category(value): int(count)
            for value, count in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist())
        }
        if self.hll is None:
            self.hll = datasketches.hll_sketch(HLL_LG_K)
        for value in found:
            self.hll.update(value)
        self._merge_counts(found)

    def _merge_counts(self, found: dict[str, int]) -> None:
        import datasketches

        if self.counts is not None:
            for value, count in found.items():
                self.counts[value] = self.counts.get(value, 0) + count
            if len(self.counts) <= EXACT_CATEGORIES:
                return
            found, self.counts = self.counts, None
            if self.kind != "categorical":
                return
        if self.kind == "categorical":
            if self.frequent is None:
                self.frequent = datasketches.frequent_strings_sketch(FREQUENT_ITEMS_LG_K)
            for value, count in found.items():
                self.frequent.update(value, count)

    def merge(self, other: ColumnProfile) -> None:
        import datasketches

        self.rows += other.rows
        self.missing += other.missing
        if other.minimum is not None and other.maximum is not None:
            self.minimum = other.minimum if self.minimum is None else min(self.minimum, other.minimum)
            self.maximum = other.maximum if self.maximum is None else max(self.maximum, other.maximum)
        self.total += other.total
        self.squares += other.squares
        if (
            self.values is not None
            and other.values is not None
            and len(self.values) + len(other.values) <= EXACT_VALUES
        ):
            self.values = np.concatenate([self.values, other.values])
        else:
            self.values = None
        if other.kll is not None:
            if self.kll is None:
                self.kll = datasketches.kll_doubles_sketch(KLL_K)
            self.kll.merge(other.kll)
        if other.hll is not None:
            union = datasketches.hll_union(HLL_LG_K)
            if self.hll is not None:
                union.update(self.hll)
            union.update(other.hll)
            self.hll = union.get_result()
        if other.frequent is not None:
            if self.frequent is None:
                self.frequent = datasketches.frequent_strings_sketch(FREQUENT_ITEMS_LG_K)
            self.frequent.merge(other.frequent)
        if self.counts is not None and other.counts is not None:
            self._merge_counts(other.counts)  # beyond the exact limit: into the sketch, or dropped (numbers)
        elif self.kind == "categorical":  # one side is sketched already: the exact side joins the sketch
            pending, self.counts = (self.counts, None) if self.counts is not None else (other.counts, None)
            self._merge_counts(pending or {})
        else:
            self.counts = None

    # --- reading ------------------------------------------------------------------------------

    @property
    def mean(self) -> float | None:
        return self.total / self.present if self.present and self.kind != "categorical" else None

    @property
    def std(self) -> float | None:
        """Population standard deviation (numpy's default, as Evidently's normalisation uses)."""
        if not self.present or self.kind == "categorical":
            return None
        mean = self.total / self.present
        return float(max(self.squares / self.present - mean * mean, 0.0) ** 0.5)

    @property
    def exact(self) -> bool:
        """Whether every value is held (tests on this column are exact)."""
        return self.values is not None if self.kind != "categorical" else self.counts is not None

    def distinct(self) -> int:
        """Distinct values: exact where counted, else the sketch's estimate."""
        if self.counts is not None:
            return len(self.counts)
        if self.hll is not None:
            return int(round(self.hll.get_estimate()))
        if self.values is not None:
            return len(np.unique(self.values))
        return self.present  # continuous values beyond the exact limit: as many as values, for the tests' rule

    def frequencies(self) -> dict[str, int]:
        """Category -> count: exact, or the frequent-items sketch's estimates of its heavy hitters."""
        if self.counts is not None:
            return dict(self.counts)
        if self.frequent is not None:
            import datasketches

            items = self.frequent.get_frequent_items(datasketches.frequent_items_error_type.NO_FALSE_NEGATIVES)
            return {item[0]: int(item[1]) for item in items}
        return {}

    def cdf(self, points: np.ndarray) -> np.ndarray:
        """Share of values <= each point: exact where the values are held, else the KLL sketch's."""
        points = np.asarray(points, dtype=np.float64)
        if self.values is not None:
            ordered = np.sort(self.values)
            return np.searchsorted(ordered, points, side="right") / max(len(ordered), 1)
        if self.kll is None:
            return np.zeros(len(points))
        ranks = np.array([self.kll.get_rank(float(point), True) for point in points])  # inclusive: <=
        return ranks

    def quantiles(self, ranks: np.ndarray) -> np.ndarray:
        ranks = np.asarray(ranks, dtype=np.float64)
        if self.values is not None:
            return np.quantile(self.values, ranks) if len(self.values) else np.full(len(ranks), np.nan)
        if self.kll is None:
            return np.full(len(ranks), np.nan)
        return np.array(self.kll.get_quantiles(ranks))

    def rank_error(self) -> float:
        """The stated normalised rank error of this column's quantiles (0 where exact)."""
        if self.values is not None or self.kll is None:
            return 0.0
        return float(self.kll.normalized_rank_error(False))

    def summary(self) -> dict[str, Any]:
        """What `raymlp data profile` shows of the column."""
        entry: dict[str, Any] = {
            "column": self.name,
            "type": self.type,
            "kind": self.kind,
            "rows": self.rows,
            "missing": self.missing,
            "missing_share": self.missing / self.rows if self.rows else 0.0,
            "distinct": self.distinct(),
            "exact": self.exact,
        }
        if self.kind in ("numeric", "datetime") and self.present:
            q = self.quantiles(np.array([0.05, 0.25, 0.5, 0.75, 0.95]))
            entry.update(
                minimum=self.minimum,
                maximum=self.maximum,
                mean=self.mean,
                std=self.std,
                p05=float(q[0]),
                p25=float(q[1]),
                median=float(q[2]),
                p75=float(q[3]),
                p95=float(q[4]),
                rank_error=self.rank_error(),
            )
        if self.kind == "categorical":
            top = sorted(self.frequencies().items(), key=lambda item: (-item[1], item[0]))[:10]
            entry["top"] = [{"value": value, "count": count} for value, count in top]
        return entry

    # --- storing ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        def sketch(value: Any) -> str | None:
            if value is None:
                return None
            data = value.serialize_updatable() if hasattr(value, "serialize_updatable") else value.serialize()
            return base64.b64encode(data).decode()

        return {
            "name": self.name,
            "kind": self.kind,
            "type": self.type,
            "rows": self.rows,
            "missing": self.missing,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "total": self.total,
            "squares": self.squares,
            "values": _pack(self.values) if self.values is not None else None,
            "counts": self.counts,
            "kll": sketch(self.kll),
            "frequent": sketch(self.frequent),
            "hll": sketch(self.hll),
        }

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> ColumnProfile:
        import datasketches

        def sketch(kind: Any, text: str | None) -> Any:
            return kind.deserialize(base64.b64decode(text)) if text else None

        return cls(
            name=entry["name"],
            kind=entry["kind"],
            type=entry["type"],
            rows=entry["rows"],
            missing=entry["missing"],
            minimum=entry["minimum"],
            maximum=entry["maximum"],
            total=entry["total"],
            squares=entry["squares"],
            values=_unpack(entry["values"]) if entry.get("values") is not None else None,
            counts=entry.get("counts"),
            kll=sketch(datasketches.kll_doubles_sketch, entry.get("kll")),
            frequent=sketch(datasketches.frequent_strings_sketch, entry.get("frequent")),
            hll=sketch(datasketches.hll_sketch, entry.get("hll")),
        )


@dataclass
class Profile:
    """Column profiles of one table (a dataset version, a split, a capture window)."""

    columns: dict[str, ColumnProfile] = field(default_factory=dict)
    rows: int = 0
    source: str = ""

    def add_table(self, table: Any) -> None:
        for arrow_field in table.schema:
            profile = self.columns.get(arrow_field.name)
            if profile is None:
                profile = self.columns[arrow_field.name] = ColumnProfile(
                    arrow_field.name, _kind_of(arrow_field.type), column_kind(arrow_field.type)
                )
                profile.rows = self.rows  # a column first seen now was missing from earlier pieces
                profile.missing = self.rows
            profile.add(table.column(arrow_field.name))
        for name, profile in self.columns.items():
            if name not in table.column_names:
                profile.rows += table.num_rows
                profile.missing += table.num_rows
        self.rows += table.num_rows

    def merge(self, other: Profile) -> None:
        for name, column in other.columns.items():
            mine = self.columns.get(name)
            if mine is None:
                mine = self.columns[name] = ColumnProfile(
                    name, column.kind, column.type, rows=self.rows, missing=self.rows
                )
            mine.merge(column)
        for name, column in self.columns.items():
            if name not in other.columns:
                column.rows += other.rows
                column.missing += other.rows
        self.rows += other.rows

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "rows": self.rows,
            "source": self.source,
            "columns": [column.to_json() for column in self.columns.values()],
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Profile:
        if document.get("format") != PROFILE_FORMAT:
            raise ValueError(f"not a raymlp profile (format {document.get('format')!r}, expected {PROFILE_FORMAT!r})")
        columns = [ColumnProfile.from_json(entry) for entry in document["columns"]]
        return cls({column.name: column for column in columns}, document["rows"], document.get("source", ""))


def profile_of_table(table: Any, source: str = "") -> Profile:
    profile = Profile(source=source)
    profile.add_table(table)
    return profile


def _profile_block(block: Any) -> Any:
    """A Ray Data task: the profile of one block, as a one-row table holding its JSON."""
    import json

    import pyarrow as pa

    return pa.table({"profile": [json.dumps(profile_of_table(block).to_json())]})


def profile_of_dataset(dataset: Any, source: str = "") -> Profile:
    """The profile of a Ray Dataset: one partial profile per block on Ray's workers, merged here."""
    import json

    profile = Profile(source=source)
    task: Any = _profile_block
    partials = dataset.map_batches(task, batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
    batch: Any
    for batch in partials.iter_batches(batch_format="pyarrow", batch_size=None):
        for text in batch.column("profile").to_pylist():
            profile.merge(Profile.from_json(json.loads(text)))
    return profile
