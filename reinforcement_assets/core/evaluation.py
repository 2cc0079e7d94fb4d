"""The promotion gate: candidates and the champion scored on the same holdout rows.

For each candidate, H0: its metric is at most the champion's minus `margin`, tested paired on the
same rows: McNemar's exact test where the metric is accuracy and the margin 0, a seeded paired
bootstrap otherwise (with a margin, the disagreement rate McNemar conditions on is itself
uncertain: conditioning on it promotes worse models far more often than the level says). Holm's
correction keeps the chance of promoting any candidate wrongly at the significance level however
many race; among the candidates that reject H0, the best estimate wins. With a margin of 0 a
candidate must be significantly better; a margin m > 0 lets through one shown to be at most m
worse (docs/benchmarks.md says how the default was chosen).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import sparse
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from .metrics import check_gate_metric, confusion, metric_of

BOOTSTRAP_RESAMPLES = 2000
MIN_HOLDOUT_ROWS = 30
_CELLS_PER_BLOCK = 4_000_000  # resamples x cells drawn at once: bounds the bootstrap's memory


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


@dataclass(frozen=True)
class PairedComparison:
    """A candidate against the champion on the same holdout rows, in one metric."""

    metric: str
    candidate: float
    champion: float
    delta: float  # candidate - champion
    ci_low: float  # a (1 - 2 x significance level) paired bootstrap interval of delta (the bootstrap test
    ci_high: float  # rejects H0 about where its low end passes -margin)
    p_value: float  # for H0: delta <= -margin
    test: str  # "mcnemar_exact" or "paired_bootstrap"
    candidate_only_correct: int
    champion_only_correct: int
    holdout_rows: int

    def as_dict(self) -> dict:
        return asdict(self)


def compare_paired(y_true, champion_pred, candidate_pred, *, metric: str, margin: float,
                   significance_level: float, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                   ) -> PairedComparison:
    """Test H0: the candidate's `metric` is at most the champion's - `margin`, paired on the rows."""
    check_gate_metric(metric)
    y_true = np.asarray(y_true, dtype=object)
    champion_pred, candidate_pred = np.asarray(champion_pred, dtype=object), np.asarray(candidate_pred, dtype=object)
    champion_right, candidate_right = champion_pred == y_true, candidate_pred == y_true
    champion_only = int(np.sum(champion_right & ~candidate_right))
    candidate_only = int(np.sum(candidate_right & ~champion_right))
    n = len(y_true)
    if n == 0:
        nan = float("nan")
        return PairedComparison(metric, nan, nan, nan, nan, nan, 1.0, "none", 0, 0, 0)
    cells, counts = _triples(y_true, champion_pred, candidate_pred)
    champion_score, candidate_score = _scores(metric, cells, counts[np.newaxis, :])
    deltas = _bootstrap_deltas(metric, cells, counts, resamples, seed)
    low, high = np.quantile(deltas, [significance_level, 1 - significance_level])
    if metric == "accuracy" and margin == 0:
        p_value, test = mcnemar_better(champion_only, candidate_only), "mcnemar_exact"
    else:
        p_value, test = float((1 + np.sum(deltas <= -margin)) / (len(deltas) + 1)), "paired_bootstrap"
    return PairedComparison(metric, float(candidate_score[0]), float(champion_score[0]),
                            float(candidate_score[0] - champion_score[0]), float(low), float(high), p_value, test,
                            candidate_only, champion_only, n)


def mcnemar_better(champion_only: int, candidate_only: int) -> float:
    """McNemar's exact test of H0: the candidate is at most as accurate as the champion, one-sided:
    of the rows exactly one of them gets right, the candidate's share is binomial(d, 1/2) under H0.
    With no such rows there is nothing to test (p = 1)."""
    discordant = champion_only + candidate_only
    if discordant == 0:
        return 1.0
    return float(binomtest(candidate_only, discordant, 0.5, alternative="greater").pvalue)


def _triples(y_true, champion_pred, candidate_pred) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (truth, champion, candidate) label codes of the rows, and how many rows each has."""
    labels = sorted(set(y_true) | set(champion_pred) | set(candidate_pred), key=str)
    index = {label: i for i, label in enumerate(labels)}
    codes = np.array([[index[v] for v in column] for column in (y_true, champion_pred, candidate_pred)],
                     dtype=np.int64).reshape(3, -1)
    cells, counts = np.unique(codes, axis=1, return_counts=True)
    return cells, counts.astype(np.float64)


def _scores(metric: str, cells: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The champion's and the candidate's metric for each row of `weights` (rows per cell, one resample per row)."""
    k = _labels(cells)
    scores = []
    for predicted in (cells[1], cells[2]):
        # cell -> its place in a flattened k x k confusion matrix, as a sparse 0/1 matrix
        placement = sparse.csr_matrix((np.ones(cells.shape[1]), (cells[0] * k + predicted, np.arange(cells.shape[1]))),
                                      shape=(k * k, cells.shape[1]))
        matrices = np.asarray(placement @ weights.T).T.reshape(-1, k, k)
        scores.append(np.atleast_1d(metric_of(metric, matrices)))
    return scores[0], scores[1]


def _bootstrap_deltas(metric: str, cells: np.ndarray, counts: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Candidate - champion on `resamples` resamples of the rows (drawn per cell: a multinomial)."""
    rng = np.random.default_rng(seed)
    n = int(counts.sum())
    block = max(1, _CELLS_PER_BLOCK // max(cells.shape[1], _labels(cells) ** 2))
    deltas = []
    for start in range(0, resamples, block):
        weights = rng.multinomial(n, counts / n, size=min(block, resamples - start)).astype(np.float64)
        champion, candidate = _scores(metric, cells, weights)
        deltas.append(candidate - champion)
    return np.concatenate(deltas)


def _labels(cells: np.ndarray) -> int:
    return int(cells.max()) + 1 if cells.size else 1


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: reject where the adjusted p-value is below the level."""
    order = np.argsort(p_values, kind="stable")
    m, adjusted, running = len(p_values), [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Standing:
    """One candidate's result in the race."""

    name: str
    comparison: PairedComparison
    adjusted_p_value: float  # Holm
    passed: bool  # rejected H0
    won: bool
    reason: str

    def as_dict(self) -> dict:
        return {"name": self.name, **self.comparison.as_dict(), "adjusted_p_value": self.adjusted_p_value,
                "passed": self.passed, "won": self.won, "reason": self.reason}


@dataclass(frozen=True)
class RaceDecision:
    """The gate's answer: the winner (None: the champion stays) and every candidate's standing."""

    winner: str | None
    reason: str
    metric: str
    margin: float
    significance_level: float
    standings: tuple[Standing, ...]

    @property
    def promote(self) -> bool:
        return self.winner is not None

    def standing(self, name: str) -> Standing:
        return next(s for s in self.standings if s.name == name)

    def as_dict(self) -> dict:
        return {"winner": self.winner, "promote": self.promote, "reason": self.reason, "metric": self.metric,
                "margin": self.margin, "significance_level": self.significance_level,
                "candidates": [s.as_dict() for s in self.standings]}


def decide_race(comparisons: Mapping[str, PairedComparison], *, metric: str, significance_level: float, margin: float,
                min_holdout_rows: int = MIN_HOLDOUT_ROWS, failures: Mapping[str, str] | None = None) -> RaceDecision:
    """The winner among `comparisons` (candidate name -> its comparison with the champion, in race order).

    No candidate wins on a holdout of fewer than `min_holdout_rows`, nor one that predicts exactly as
    the champion (nothing to gain). Holm's correction runs over every candidate compared; `failures`
    (name -> why it could not be compared) lose, untested.
    """
    names = list(comparisons)
    adjusted = dict(zip(names, holm([comparisons[n].p_value for n in names])))
    bound = "better than the champion" if margin == 0 else f"worse than the champion by less than {margin:g}"

    def why_not(name: str) -> str | None:
        c = comparisons[name]
        if c.holdout_rows < min_holdout_rows:
            return f"holdout has {c.holdout_rows} rows, fewer than the {min_holdout_rows} needed to compare models"
        if c.candidate_only_correct + c.champion_only_correct == 0 and c.delta == 0:
            return "predicts as the champion on every holdout row: nothing to gain"
        if adjusted[name] >= significance_level:
            return f"not shown {bound}: {_summary(c, adjusted[name])} >= {significance_level:g}"
        return None

    refusals = {name: why_not(name) for name in names}
    passed = [name for name in names if refusals[name] is None]
    winner = max(passed, key=lambda name: comparisons[name].candidate) if passed else None
    standings = []
    for name in names:
        c, refusal = comparisons[name], refusals[name]
        if name == winner:
            reason = f"won: shown {bound}: {_summary(c, adjusted[name])} < {significance_level:g}"
        elif refusal is None:
            reason = (f"passed the gate, but {winner} scored higher ({metric} {comparisons[winner].candidate:.4f} vs "
                      f"{c.candidate:.4f})")
        else:
            reason = f"refused: {refusal}"
        standings.append(Standing(name, c, adjusted[name], refusal is None, name == winner, reason))
    for name, why in (failures or {}).items():
        nan = float("nan")
        untested = PairedComparison(metric, nan, nan, nan, nan, nan, 1.0, "none", 0, 0, 0)
        standings.append(Standing(name, untested, 1.0, False, False, f"refused: {why}"))
    if winner:
        reason = f"{winner} promoted: {standings[names.index(winner)].reason[len('won: '):]}"
    elif standings:
        reason = f"the champion stays: no candidate passed the gate ({'; '.join(f'{s.name} {s.reason}' for s in standings)})"
    else:
        reason = "the champion stays: no candidate was trained"
    return RaceDecision(winner, reason, metric, margin, significance_level, tuple(standings))


def _summary(c: PairedComparison, adjusted_p: float) -> str:
    return (f"{c.metric} {c.candidate:.4f} vs {c.champion:.4f} ({c.delta:+.4f}, interval [{c.ci_low:+.4f}, "
            f"{c.ci_high:+.4f}]), {c.test} p={c.p_value:.3g}, Holm {adjusted_p:.3g}")
