"""Schema and statistics anomalies of a profile against a reference profile (TFDV's and Deequ's
kinds): columns missing or extra, a changed type, categories the reference never had, a changed
share of missing values, values outside the reference's range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .profile import Profile

#: A column's missing share may grow by this much (absolute) before it is an anomaly.
MISSING_SHARE_CHANGE = 0.05
#: Unseen categories listed in one message.
LISTED = 5


@dataclass(frozen=True)
class Anomaly:
    column: str
    kind: str  # missing_column | extra_column | type_change | unseen_category | null_rate | out_of_range
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"column": self.column, "kind": self.kind, "message": self.message}


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.6g}"


def anomalies(reference: Profile, current: Profile, *, columns: list[str] | None = None) -> list[Anomaly]:
    """Every anomaly of `current` against `reference`, over `columns` (default: the reference's)."""
    found: list[Anomaly] = []
    expected = columns if columns is not None else list(reference.columns)
    for name in expected:
        if name in reference.columns and name not in current.columns:
            found.append(Anomaly(name, "missing_column", f"'{name}' is in the reference but not in this data"))
    for name in current.columns if columns is None else expected:
        if name not in reference.columns and name in current.columns:
            found.append(Anomaly(name, "extra_column", f"'{name}' is in this data but not in the reference"))
    for name in expected:
        ref, cur = reference.columns.get(name), current.columns.get(name)
        if ref is None or cur is None:
            continue
        if ref.type != cur.type:
            found.append(Anomaly(name, "type_change", f"'{name}' was {ref.type} in the reference, is {cur.type} here"))
            if ref.kind != cur.kind:
                continue
        ref_share = ref.missing / ref.rows if ref.rows else 0.0
        cur_share = cur.missing / cur.rows if cur.rows else 0.0
        if cur_share - ref_share > MISSING_SHARE_CHANGE:
            found.append(
                Anomaly(
                    name,
                    "null_rate",
                    f"'{name}' is missing in {cur_share:.1%} of rows (reference: {ref_share:.1%})",
                )
            )
        if ref.kind == "categorical" and ref.counts is not None:
            unseen = sorted(set(cur.frequencies()) - set(ref.counts))
            if unseen:
                shown = ", ".join(repr(value) for value in unseen[:LISTED])
                more = f" and {len(unseen) - LISTED} more" if len(unseen) > LISTED else ""
                rows = sum(cur.frequencies()[value] for value in unseen)
                found.append(
                    Anomaly(
                        name,
                        "unseen_category",
                        f"'{name}' has values the reference never had: {shown}{more} ({rows} rows)",
                    )
                )
        if ref.kind in ("numeric", "datetime") and ref.minimum is not None and cur.minimum is not None:
            below, above = cur.minimum < ref.minimum, (cur.maximum or 0) > (ref.maximum or 0)
            if below or above:
                share = 0.0
                if cur.present:
                    import numpy as np

                    cdf = cur.cdf(np.array([ref.minimum, ref.maximum]))
                    below_share = float(cdf[0]) if below else 0.0
                    share = below_share + (1.0 - float(cdf[1]) if above else 0.0)
                found.append(
                    Anomaly(
                        name,
                        "out_of_range",
                        f"'{name}' ranges {_number(cur.minimum)} .. {_number(cur.maximum)}, outside the reference's "
                        f"{_number(ref.minimum)} .. {_number(ref.maximum)} (about {share:.1%} of rows)",
                    )
                )
    return found
