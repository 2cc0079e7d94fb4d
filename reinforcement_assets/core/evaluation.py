"""Scoring challenger and champion on the same holdout, and the promotion gate."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from .metrics import confusion, metric_of


def classification_metrics(y_true, y_pred) -> dict[str, float]:
    """Accuracy, balanced accuracy, and macro-averaged precision, recall and F1 (`f1` and `macro_f1`
    are the same; labels are text: no class is "positive")."""
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    if len(y_true) == 0:
        return {**dict.fromkeys(("accuracy", "balanced_accuracy", "precision", "recall", "f1", "macro_f1"),
                                float("nan")), "n": 0}
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
    matrix = confusion(y_true, y_pred, sorted(set(y_true) | set(y_pred), key=str))
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": metric_of("balanced_accuracy", matrix),
            "precision": float(precision), "recall": float(recall), "f1": float(f1), "macro_f1": float(f1),
            "n": int(len(y_true))}


def mcnemar_exact(y_true, champion_pred, challenger_pred) -> tuple[int, int, float]:
    """McNemar's exact test on paired predictions, one-sided against the challenger.

    Returns (champion_only_correct, challenger_only_correct, p_value), where the p-value is that of
    discordant pairs favouring the champion this often if both models were equally accurate.
    """
    y_true = np.asarray(y_true, dtype=object)
    champion_right = np.asarray(champion_pred, dtype=object) == y_true
    challenger_right = np.asarray(challenger_pred, dtype=object) == y_true
    champion_only = int(np.sum(champion_right & ~challenger_right))
    challenger_only = int(np.sum(challenger_right & ~champion_right))
    discordant = champion_only + challenger_only
    if discordant == 0:
        return champion_only, challenger_only, 1.0
    p_value = binomtest(champion_only, discordant, 0.5, alternative="greater").pvalue
    return champion_only, challenger_only, float(p_value)


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    p_value: float
    champion_only_correct: int
    challenger_only_correct: int
    accuracy_delta: float
    holdout_rows: int

    def as_dict(self) -> dict:
        return asdict(self)


def decide_promotion(
    y_true, champion_pred, challenger_pred, *, significance_level: float = 0.05,
    non_inferiority_margin: float = 0.0, min_holdout_rows: int = 30,
) -> PromotionDecision:
    """Promote the challenger only if it is measurably not worse than the champion.

    Refused when the holdout is too small to tell, when the challenger changes no prediction (a
    new version with nothing to gain), when McNemar's exact test finds it significantly worse at
    `significance_level`, or when its accuracy trails the champion's by more than
    `non_inferiority_margin`.
    """
    n = len(y_true)
    champion_only, challenger_only, p_value = mcnemar_exact(y_true, champion_pred, challenger_pred)
    delta = (challenger_only - champion_only) / n if n else 0.0

    def decision(promote: bool, reason: str) -> PromotionDecision:
        return PromotionDecision(promote, reason, p_value, champion_only, challenger_only, delta, n)

    if n < min_holdout_rows:
        return decision(False, f"holdout has {n} rows, fewer than the {min_holdout_rows} needed to compare models")
    if champion_only + challenger_only == 0:
        return decision(False, "challenger predicts exactly as the champion on every holdout row: nothing to gain")
    if p_value < significance_level:
        return decision(False, f"challenger significantly worse (McNemar p={p_value:.3g} < {significance_level})")
    if delta < -non_inferiority_margin:
        return decision(False, f"challenger accuracy {delta:+.2%} vs champion, beyond the margin of "
                               f"{non_inferiority_margin:.2%}")
    return decision(True, f"challenger not worse: accuracy {delta:+.2%} vs champion ({challenger_only} holdout rows "
                          f"only it gets right, {champion_only} only the champion; McNemar p={p_value:.3g} for worse)")
