"""The candidate against the champion on the same held-out rows: both packages score this run's test split through
the code predict and serve use, and `train.metrics` measures both (TFX's change threshold)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Metrics where lower is better.
LOWER_IS_BETTER = {"loss", "rmse", "mae"}


@dataclass(frozen=True)
class ChampionComparison:
    passed: bool
    summary: str
    details: dict[str, Any]


def test_split_metrics(package: Any, test: Any) -> dict[str, float]:
    """`package`'s metrics on the labelled rows `test` (a DataFrame with its features and label), named without a
    split prefix (accuracy, f1, roc_auc, loss; rmse, mae, r2)."""
    import pyarrow as pa

    from .metrics import classification_metrics, regression_metrics

    label = package.description["label"]
    missing = [name for name in package.feature_names if name not in test.columns]
    if missing:
        raise ValueError(f"the test rows lack its features {', '.join(missing)}")
    scored = package.predict_table(pa.Table.from_pandas(test[package.feature_names], preserve_index=False))
    if package.description["task"] == "classification":
        classes = [str(name) for name in package.classes]
        codes_of = {name: index for index, name in enumerate(classes)}
        truth = [str(value) for value in test[label].tolist()]
        known = [index for index, value in enumerate(truth) if value in codes_of]
        codes = np.array([codes_of[truth[index]] for index in known])
        probabilities = np.column_stack(
            [scored.column(f"probability_{name}").to_numpy(zero_copy_only=False) for name in classes]
        )[known]
        metrics = classification_metrics(codes, probabilities.astype(np.float64), "test")
    else:
        predicted = scored.column("prediction").to_numpy(zero_copy_only=False).astype(np.float64)
        metrics = regression_metrics(test[label].to_numpy(dtype=np.float64), predicted, "test")
    return {key.removeprefix("test_"): float(value) for key, value in metrics.items()}


def compare_with_champion(
    candidate: Any, champion: Any, test: Any, metric: str, max_drop: float, champion_version: int
) -> ChampionComparison:
    """Whether `candidate` is at most `max_drop` worse than `champion` by `metric` on the same `test` rows."""
    name = metric.removeprefix("test_")
    lower_better = name in LOWER_IS_BETTER
    mine = test_split_metrics(candidate, test)
    try:
        theirs = test_split_metrics(champion, test)
    except ValueError as error:
        return ChampionComparison(
            False,
            f"the champion (version {champion_version}) cannot score this test split: {error}",
            {"metric": name, "candidate": mine.get(name), "champion": None, "rows": len(test)},
        )
    if name not in mine or name not in theirs:
        return ChampionComparison(False, f"{name} is not measured for this task", {"metric": name, "rows": len(test)})
    drop = (mine[name] - theirs[name]) if lower_better else (theirs[name] - mine[name])
    passed = drop <= max_drop + 1e-12
    verdict = "within" if passed else "beyond"
    summary = (
        f"{name} {mine[name]:.4g} against the champion's (version {champion_version}) {theirs[name]:.4g} on the same "
        f"{len(test)} test rows: {max(drop, 0.0):.4g} worse, {verdict} max_drop {max_drop:g}"
    )
    details = {
        "metric": name,
        "candidate": mine[name],
        "champion": theirs[name],
        "champion_version": champion_version,
        "drop": drop,
        "max_drop": max_drop,
        "rows": len(test),
        "lower_is_better": lower_better,
    }
    return ChampionComparison(passed, summary, details)
