"""Metrics every backend reports, computed one way from labels and model outputs, and the early
stopping rule they feed. Numpy and scikit-learn only, so any worker can import it."""

from __future__ import annotations

from typing import Any

import numpy as np


def probabilities_from_scores(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (scores are logits or log-probabilities)."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.max(axis=1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def classification_metrics(codes: np.ndarray, probabilities: np.ndarray, prefix: str) -> dict[str, float]:
    """loss (mean cross-entropy), accuracy, macro F1 over the classes present, and ROC AUC
    (one-vs-rest, averaged over the classes that have both positive and negative rows)."""
    from sklearn import metrics

    codes = np.asarray(codes, dtype=np.int64)
    if not len(codes):
        return {}
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-15, 1.0)
    predicted = probabilities.argmax(axis=1)
    present = np.unique(codes)
    loss = float(-np.log(probabilities[np.arange(len(codes)), codes]).mean())
    areas = [
        metrics.roc_auc_score(codes == code, probabilities[:, code])
        for code in range(probabilities.shape[1])
        if 0 < int((codes == code).sum()) < len(codes)
    ]
    return {
        f"{prefix}_loss": loss,
        f"{prefix}_accuracy": float((predicted == codes).mean()),
        f"{prefix}_f1": float(metrics.f1_score(codes, predicted, labels=present, average="macro", zero_division=0)),
        f"{prefix}_roc_auc": float(np.mean(areas)) if areas else 0.5,
    }


def regression_metrics(truth: np.ndarray, predicted: np.ndarray, prefix: str, unit: float = 1.0) -> dict[str, float]:
    """loss (mean squared error in the units given), RMSE and MAE times `unit` (back in the label's
    own units when the values are standardised), R²."""
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if not len(truth):
        return {}
    error = predicted - truth
    mse = float((error**2).mean())
    total = float(((truth - truth.mean()) ** 2).sum())
    return {
        f"{prefix}_loss": mse,
        f"{prefix}_rmse": unit * mse**0.5,
        f"{prefix}_mae": unit * float(np.abs(error).mean()),
        f"{prefix}_r2": 1.0 - float((error**2).sum()) / total if total > 0 else 0.0,
    }


def score_metrics(
    task: str, labels: np.ndarray, scores: np.ndarray, prefix: str = "val", unit: float = 1.0
) -> dict[str, float]:
    """The metrics of one split from encoded labels (class codes, or standardised values) and raw
    model outputs (logits or log-probabilities, or standardised values)."""
    if task == "classification":
        return classification_metrics(labels, probabilities_from_scores(scores), prefix)
    return regression_metrics(labels, scores, prefix, unit)


def parts_metrics(
    task: str, score_parts: list[np.ndarray], label_parts: list[np.ndarray], prefix: str = "val", unit: float = 1.0
) -> dict[str, float]:
    """`score_metrics` of a split scored in parts (batches): none when there were no parts; a
    regression's [n, 1] outputs are read as [n]."""
    if not score_parts:
        return {}
    outputs = np.concatenate(score_parts)
    if task != "classification":
        outputs = outputs.reshape(-1)
    return score_metrics(task, np.concatenate(label_parts), outputs, prefix, unit=unit)


class EarlyStopping:
    """`train.early_stopping`: stop once `metric` has not improved by `min_delta` for `patience`
    epochs. Built from a config dict (`EarlyStoppingConfig.model_dump()`) or None (never stops);
    `replay` the history of a resumed run first."""

    def __init__(self, config: dict[str, Any] | None):
        self.config = config
        self.best: float | None = None
        self.waited = 0

    def should_stop(self, metrics: dict[str, float]) -> bool:
        if not self.config:
            return False
        value = metrics.get(self.config["metric"])
        if value is None or not np.isfinite(value):
            self.waited += 1
        else:
            gain = (
                (self.best - value)
                if self.config["mode"] == "min" and self.best is not None
                else (value - self.best)
                if self.best is not None
                else float("inf")
            )
            if gain > self.config["min_delta"]:
                self.best, self.waited = value, 0
            else:
                self.waited += 1
        return self.waited >= self.config["patience"]

    def replay(self, history: list[dict[str, float]]) -> bool:
        """Feed the epochs a resumed run already has; True when they already say stop."""
        stop = False
        for metrics in history:
            stop = self.should_stop(metrics)
        return stop
