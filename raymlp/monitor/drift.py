"""Drift tests between a reference column profile and a current one.

The test per column follows Evidently 0.7's defaults (its `get_default_stattest`), so verdicts
agree where the data is the same: with at most 1000 reference values, KS for numeric columns
with more than 5 distinct values, chi-square for other numeric and for categorical columns with
more than 2 categories, a two-proportion z-test for binary ones (drift when p < 0.05); with more
reference values, the Wasserstein distance normalised by the reference's standard deviation for
numeric columns with more than 5 distinct values, else the Jensen-Shannon distance (drift when
>= 0.1). PSI (>= 0.1) can be chosen per column. Where both sides hold every value the numbers are
scipy's on those values; where a side is sketched, the CDFs come from its KLL sketch (error
within the sketch's stated rank error) and the p-value from the KS distribution's asymptotic form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .profile import ColumnProfile

#: test -> (what its score is, default threshold)
TESTS: dict[str, tuple[str, float]] = {
    "ks": ("p_value", 0.05),
    "chisquare": ("p_value", 0.05),
    "z": ("p_value", 0.05),
    "wasserstein": ("distance", 0.1),
    "jensenshannon": ("distance", 0.1),
    "psi": ("distance", 0.1),
}
SMALL_REFERENCE = 1000
_EMPTY_SHARE = 0.0001  # Evidently's stand-in for an empty bin (log and division need it)


@dataclass(frozen=True)
class ColumnResult:
    column: str
    kind: str
    test: str
    score_kind: str
    score: float
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "kind": self.kind,
            "test": self.test,
            "score_kind": self.score_kind,
            "score": self.score,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "note": self.note,
        }


def _distinct_together(reference: ColumnProfile, current: ColumnProfile) -> int:
    if reference.counts is not None and current.counts is not None:
        return len(set(reference.counts) | set(current.counts))
    return max(reference.distinct(), current.distinct())


def kind_as_tested(reference: ColumnProfile, current: ColumnProfile) -> str:
    """numeric, categorical or binary, as the tests see the column."""
    if reference.kind in ("numeric", "datetime"):
        return "numeric"
    return "binary" if _distinct_together(reference, current) <= 2 else "categorical"


def default_test(reference: ColumnProfile, current: ColumnProfile) -> str:
    distinct = _distinct_together(reference, current)
    numeric = reference.kind in ("numeric", "datetime")
    if reference.present <= SMALL_REFERENCE:
        if numeric:
            return "ks" if distinct > 5 else "chisquare"
        return "chisquare" if distinct > 2 else "z"
    if numeric:
        return "wasserstein" if distinct > 5 else "jensenshannon"
    return "jensenshannon"


def _grid(reference: ColumnProfile, current: ColumnProfile, points: int = 2001) -> np.ndarray:
    """Points where two CDFs are compared: every held value, else the sketches' quantiles."""
    parts = []
    for side in (reference, current):
        if side.values is not None:
            parts.append(side.values)
        else:
            parts.append(side.quantiles(np.linspace(0.0, 1.0, points)))
    grid = np.unique(np.concatenate(parts))
    return grid[np.isfinite(grid)]


def _ks(reference: ColumnProfile, current: ColumnProfile) -> tuple[float, str]:
    from scipy import stats

    if reference.values is not None and current.values is not None:
        return float(stats.ks_2samp(reference.values, current.values).pvalue), ""
    grid = _grid(reference, current)
    statistic = float(np.max(np.abs(reference.cdf(grid) - current.cdf(grid)))) if len(grid) else 0.0
    n, m = reference.present, current.present
    effective = round(n * m / (n + m))
    return float(stats.kstwo.sf(statistic, max(effective, 1))), f"D={statistic:.4g} from sketches (asymptotic p)"


def _wasserstein(reference: ColumnProfile, current: ColumnProfile) -> tuple[float, str]:
    from scipy import stats

    scale = max(reference.std or 0.0, 0.001)
    if reference.values is not None and current.values is not None:
        return float(stats.wasserstein_distance(reference.values, current.values)) / scale, ""
    grid = _grid(reference, current)
    if len(grid) < 2:
        return 0.0, ""
    gaps = np.abs(reference.cdf(grid[:-1]) - current.cdf(grid[:-1]))
    return float(np.sum(gaps * np.diff(grid))) / scale, "from sketches"


def _shares_over(keys: list[str], frequencies: dict[str, int], total: int) -> np.ndarray:
    counts = np.array([frequencies.get(key, 0) for key in keys], dtype=np.float64)
    return counts / total if total else counts


def _category_shares(reference: ColumnProfile, current: ColumnProfile) -> tuple[np.ndarray, np.ndarray]:
    """Both sides' shares over the union of their categories (plus 'other' where a sketch left some out)."""
    ref_counts, cur_counts = reference.frequencies(), current.frequencies()
    keys = sorted(set(ref_counts) | set(cur_counts))
    ref = _shares_over(keys, ref_counts, reference.present)
    cur = _shares_over(keys, cur_counts, current.present)
    rest_ref, rest_cur = max(1.0 - ref.sum(), 0.0), max(1.0 - cur.sum(), 0.0)
    if rest_ref > 1e-9 or rest_cur > 1e-9:
        ref, cur = np.append(ref, rest_ref), np.append(cur, rest_cur)
    return ref, cur


def _binned_shares(reference: ColumnProfile, current: ColumnProfile, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Shares in `bins` equal-width bins over both sides' range (numpy's histogram edges)."""
    low = min(value for value in (reference.minimum, current.minimum) if value is not None)
    high = max(value for value in (reference.maximum, current.maximum) if value is not None)
    if reference.values is not None and current.values is not None:
        edges = np.histogram_bin_edges(np.concatenate([reference.values, current.values]), bins=bins)
        ref = np.histogram(reference.values, edges)[0] / max(reference.present, 1)
        cur = np.histogram(current.values, edges)[0] / max(current.present, 1)
        return ref, cur
    edges = np.linspace(low, high, bins + 1) if high > low else np.array([low - 0.5, high + 0.5])
    ref_cdf, cur_cdf = reference.cdf(edges), current.cdf(edges)
    ref_cdf[0], cur_cdf[0] = 0.0, 0.0  # the first bin is closed on the left: it takes the minimum
    ref_cdf[-1], cur_cdf[-1] = 1.0, 1.0
    return np.diff(ref_cdf), np.diff(cur_cdf)


def _shares(reference: ColumnProfile, current: ColumnProfile, bins: int) -> tuple[np.ndarray, np.ndarray]:
    if reference.kind in ("numeric", "datetime"):
        return _binned_shares(reference, current, bins)
    return _category_shares(reference, current)


def _without_empties(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, cur = ref.copy(), cur.copy()
    ref[ref == 0] = _EMPTY_SHARE
    cur[cur == 0] = _EMPTY_SHARE
    return ref, cur


def _jensenshannon(reference: ColumnProfile, current: ColumnProfile) -> tuple[float, str]:
    from scipy.spatial import distance

    ref, cur = _without_empties(*_shares(reference, current, 30))
    return float(distance.jensenshannon(ref, cur)), ""


def _psi(reference: ColumnProfile, current: ColumnProfile) -> tuple[float, str]:
    ref, cur = _without_empties(*_shares(reference, current, 10))
    return float(np.sum((ref - cur) * np.log(ref / cur))), ""


def _chisquare(reference: ColumnProfile, current: ColumnProfile) -> tuple[float, str]:
    from scipy import stats

    ref_counts, cur_counts = reference.frequencies(), current.frequencies()
    keys = sorted(set(ref_counts) | set(cur_counts))
    scale = current.present / reference.present
    observed = np.array([cur_counts.get(key, 0) for key in keys], dtype=np.float64)
    expected = np.array([ref_counts.get(key, 0) * scale for key in keys], dtype=np.float64)
    rest_observed, rest_expected = current.present - observed.sum(), reference.present * scale - expected.sum()
    if rest_observed > 0.5 or rest_expected > 0.5:
        observed, expected = np.append(observed, rest_observed), np.append(expected, rest_expected)
    if np.any((expected == 0) & (observed > 0)):
        return 0.0, "a category the reference never had"
    keep = expected > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(stats.chisquare(observed[keep], expected[keep]).pvalue), ""


def _z(reference: ColumnProfile, current: ColumnProfile) -> tuple[float, str]:
    from scipy import stats

    ref_counts, cur_counts = reference.frequencies(), current.frequencies()
    keys = sorted(set(ref_counts) | set(cur_counts))
    if len(keys) <= 1:
        return 1.0, "one value on both sides"
    key = keys[0]
    n1, n2 = reference.present, current.present
    p1, p2 = ref_counts.get(key, 0) / n1, cur_counts.get(key, 0) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    spread = np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    if spread == 0:
        return 1.0, ""
    return float(2 * (1 - stats.norm.cdf(abs((p1 - p2) / spread)))), ""


_RUN = {
    "ks": _ks,
    "chisquare": _chisquare,
    "z": _z,
    "wasserstein": _wasserstein,
    "jensenshannon": _jensenshannon,
    "psi": _psi,
}


def column_drift(
    reference: ColumnProfile, current: ColumnProfile, test: str | None = None, threshold: float | None = None
) -> ColumnResult | None:
    """The drift test of one column (`test` and `threshold` override the defaults); None when a side has no values."""
    kind = kind_as_tested(reference, current)
    if not reference.present or not current.present:
        return None
    chosen = test or default_test(reference, current)
    score_kind, default_threshold = TESTS[chosen]
    limit = default_threshold if threshold is None else threshold
    score, note = _RUN[chosen](reference, current)
    if not np.isfinite(score):
        score = 0.0 if score_kind == "p_value" else float("inf")
    drifted = score < limit if score_kind == "p_value" else score >= limit
    return ColumnResult(
        reference.name, kind, chosen, score_kind, score, limit, bool(drifted), reference.present, current.present, note
    )


def corrected(results: list[ColumnResult], correction: str) -> list[ColumnResult]:
    """Drift verdicts of p-value tests after a multiple-testing correction over the columns:
    `bonferroni` (p < threshold / tests) or `fdr` (Benjamini-Hochberg at the threshold); distances stay."""
    if correction == "none":
        return results
    from dataclasses import replace

    tested = [index for index, result in enumerate(results) if result.score_kind == "p_value"]
    count = len(tested)
    if not count:
        return results
    verdicts = {index: results[index].drifted for index in range(len(results))}
    if correction == "bonferroni":
        for index in tested:
            verdicts[index] = results[index].score < results[index].threshold / count
    else:
        order = sorted(tested, key=lambda index: results[index].score)
        passed = 0
        for rank, index in enumerate(order, start=1):
            if results[index].score <= results[index].threshold * rank / count:
                passed = rank
        for rank, index in enumerate(order, start=1):
            verdicts[index] = rank <= passed
    return [replace(result, drifted=bool(verdicts[index])) for index, result in enumerate(results)]


def distribution(reference: ColumnProfile, current: ColumnProfile, bins: int = 20, top: int = 20) -> dict[str, Any]:
    """What the report draws of a column: shares of both sides over shared bins or categories."""
    if reference.kind in ("numeric", "datetime"):
        lows = [value for value in (reference.minimum, current.minimum) if value is not None]
        highs = [value for value in (reference.maximum, current.maximum) if value is not None]
        if not lows:
            return {"kind": "numeric", "edges": [], "reference": [], "current": []}
        low, high = min(lows), max(highs)
        edges = np.linspace(low, high, bins + 1) if high > low else np.array([low - 0.5, high + 0.5])
        shares = []
        for side in (reference, current):
            cdf = side.cdf(edges)
            cdf[0] = 0.0
            cdf[-1] = 1.0 if side.present else 0.0
            shares.append(np.diff(cdf).tolist())
        return {"kind": "numeric", "edges": edges.tolist(), "reference": shares[0], "current": shares[1]}
    ref_counts, cur_counts = reference.frequencies(), current.frequencies()
    ranked = sorted(
        set(ref_counts) | set(cur_counts),
        key=lambda key: (
            -(ref_counts.get(key, 0) / max(reference.present, 1) + cur_counts.get(key, 0) / max(current.present, 1))
        ),
    )[:top]
    return {
        "kind": "categorical",
        "categories": ranked,
        "reference": [ref_counts.get(key, 0) / max(reference.present, 1) for key in ranked],
        "current": [cur_counts.get(key, 0) / max(current.present, 1) for key in ranked],
    }
