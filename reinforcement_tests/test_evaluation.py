import math
import warnings

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from reinforcement_assets.core.evaluation import (
    classification_metrics,
    compare_paired,
    decide_race,
    holm,
    mcnemar_better,
)
from reinforcement_assets.core.metrics import confusion, metric_of


def test_classification_metrics_are_macro_averaged():
    y_true = ["a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "b", "b", "b", "c", "a"]
    m = classification_metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # precision: a 1/2, b 2/3, c 1/1; recall: a 1/2, b 1, c 1/2
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3) == m["balanced_accuracy"]
    assert m["macro_f1"] == m["f1"] and m["n"] == 6


def test_metrics_of_nothing_are_nan():
    assert math.isnan(classification_metrics([], [])["accuracy"])


@pytest.mark.parametrize("seed", range(40))
def test_confusion_metrics_agree_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    k, n = rng.integers(2, 7), rng.integers(1, 80)
    y_true, y_pred = rng.integers(0, k, n).astype(str), rng.integers(0, k + 2, n).astype(str)
    matrix = confusion(y_true, y_pred, sorted(set(y_true) | set(y_pred)))
    assert metric_of("accuracy", matrix) == pytest.approx(accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():  # scikit-learn warns of predicted classes the truth lacks
        warnings.simplefilter("ignore")
        assert metric_of("balanced_accuracy", matrix) == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert metric_of("macro_f1", matrix) == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    stacked = metric_of("macro_f1", np.stack([matrix, 3 * matrix]))
    assert stacked.shape == (2,) and stacked[0] == pytest.approx(stacked[1])


def paired(champion_only, challenger_only, both=50, neither=10):
    """Labels and predictions with the given discordant pair counts."""
    y, champ, chall = [], [], []
    for n, (c1, c2) in [(champion_only, (1, 0)), (challenger_only, (0, 1)), (both, (1, 1)), (neither, (0, 0))]:
        y += ["a"] * n
        champ += ["a" if c1 else "b"] * n
        chall += ["a" if c2 else "b"] * n
    return np.array(y, dtype=object), np.array(champ, dtype=object), np.array(chall, dtype=object)


def test_with_no_margin_the_accuracy_test_is_mcnemars_exact_test_for_better():
    y, champ, chall = paired(champion_only=4, challenger_only=15)
    c = compare_paired(y, champ, chall, metric="accuracy", margin=0.0, significance_level=0.05)
    assert (c.champion_only_correct, c.candidate_only_correct, c.holdout_rows) == (4, 15, 79)
    assert c.p_value == pytest.approx(binomtest(15, 19, 0.5, alternative="greater").pvalue) == mcnemar_better(4, 15)
    assert c.delta == pytest.approx(11 / 79) and c.test == "mcnemar_exact"
    assert c.ci_low < c.delta < c.ci_high


def test_a_margin_lets_a_model_within_it_through_and_not_one_beyond_it():
    # 60 rows only the champion gets right, 40 only the candidate: 20 of 5,110 rows worse (-0.39 points).
    y, champ, chall = paired(champion_only=60, challenger_only=40, both=5000)
    assert compare_paired(y, champ, chall, metric="accuracy", margin=0.0, significance_level=0.05).p_value > 0.5
    within = compare_paired(y, champ, chall, metric="accuracy", margin=0.01, significance_level=0.05)
    assert within.test == "paired_bootstrap" and within.p_value < 0.01 and within.ci_low > -0.01
    # Exactly at the margin is H0 (worse by the margin): never shown within it.
    y, champ, chall = paired(champion_only=5, challenger_only=0, both=990, neither=5)
    at = compare_paired(y, champ, chall, metric="accuracy", margin=0.005, significance_level=0.05)
    assert at.delta == pytest.approx(-0.005) and at.p_value > 0.05
    assert mcnemar_better(0, 0) == 1.0 and mcnemar_better(3, 0) == 1.0


def test_with_a_margin_the_gate_keeps_its_level_where_few_rows_disagree():
    """At H0's boundary (true difference exactly -margin) a sound test rejects at most about alpha
    of the time, however few rows the two models disagree on."""
    rng = np.random.default_rng(0)
    n, margin, rejected, runs = 500, 0.01, 0, 200
    for run in range(runs):
        u = rng.random(n)
        champion_only, candidate_only = u < 0.012, (u >= 0.012) & (u < 0.014)  # -0.01 expected
        y = np.full(n, "a", dtype=object)
        champ = np.where(candidate_only, "b", "a").astype(object)
        chall = np.where(champion_only, "b", "a").astype(object)
        c = compare_paired(y, champ, chall, metric="accuracy", margin=margin, significance_level=0.05, seed=run)
        rejected += c.p_value < 0.05
    assert rejected / runs <= 0.1


def test_the_bootstrap_is_seeded_paired_and_sees_what_accuracy_misses():
    rng = np.random.default_rng(0)
    n = 4000
    y = np.where(rng.random(n) < 0.03, "fraud", "ok").astype(object)
    champion = np.full(n, "ok", dtype=object)  # never flags: 97 % accurate, useless
    candidate = np.where((y == "fraud") & (rng.random(n) < 0.7), "fraud", "ok").astype(object)
    candidate[rng.choice(n, 40, replace=False)] = "fraud"  # a few false alarms
    for metric in ("macro_f1", "balanced_accuracy"):
        c = compare_paired(y, champion, candidate, metric=metric, margin=0.0, significance_level=0.05, seed=3)
        assert c.test == "paired_bootstrap" and c.p_value < 0.001 and c.ci_low > 0
        expected = (f1_score(y, candidate, average="macro"), f1_score(y, champion, average="macro", zero_division=0)) \
            if metric == "macro_f1" else (balanced_accuracy_score(y, candidate), balanced_accuracy_score(y, champion))
        assert (c.candidate, c.champion) == pytest.approx(expected)
        assert c == compare_paired(y, champion, candidate, metric=metric, margin=0.0, significance_level=0.05, seed=3)
    # Identical predictions: every resample's difference is 0, never above it.
    same = compare_paired(y, champion, champion.copy(), metric="macro_f1", margin=0.0, significance_level=0.05)
    assert same.p_value == 1.0 and same.delta == 0


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([]) == []


def comparison(champion_only, challenger_only, both=400, neither=40, metric="accuracy"):
    return compare_paired(*paired(champion_only, challenger_only, both, neither), metric=metric, margin=0.0,
                          significance_level=0.05)


def test_the_race_promotes_the_best_estimate_among_those_shown_better():
    race = {"update": comparison(5, 40), "refit": comparison(5, 60), "worse": comparison(40, 5)}
    decision = decide_race(race, metric="accuracy", significance_level=0.05, margin=0.0)
    assert decision.winner == "refit" and decision.promote
    assert decision.standing("update").passed and "but refit scored higher" in decision.standing("update").reason
    assert decision.standing("worse").reason.startswith("refused: not shown better than the champion")
    assert [s.adjusted_p_value for s in decision.standings] == holm([c.p_value for c in race.values()])
    assert decision.as_dict()["candidates"][1]["won"] is True


def test_holm_keeps_a_crowd_of_candidates_from_promoting_by_luck():
    # One candidate at p ~ 0.03 passes alone; beside four others that change nothing it does not.
    lucky = comparison(10, 22)
    assert 0.01 < lucky.p_value < 0.05
    alone = decide_race({"lucky": lucky}, metric="accuracy", significance_level=0.05, margin=0.0)
    assert alone.winner == "lucky"
    crowd = {"lucky": lucky, **{f"other{i}": comparison(10, 10) for i in range(4)}}
    assert decide_race(crowd, metric="accuracy", significance_level=0.05, margin=0.0).winner is None


def test_a_holdout_too_small_to_tell_or_a_candidate_that_changes_nothing_never_wins():
    small = decide_race({"refit": comparison(0, 5, both=5, neither=0)}, metric="accuracy", significance_level=0.05,
                        margin=0.0)
    assert not small.promote and "holdout has 10 rows" in small.standing("refit").reason
    y, champ, _ = paired(0, 0, both=80, neither=20)
    same = compare_paired(y, champ, champ.copy(), metric="accuracy", margin=0.05, significance_level=0.05)
    decision = decide_race({"update": same}, metric="accuracy", significance_level=0.05, margin=0.05)
    assert not decision.promote and "nothing to gain" in decision.standing("update").reason
    assert "the champion stays" in decision.reason
