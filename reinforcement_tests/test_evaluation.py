import math

import numpy as np
import pytest
from scipy.stats import binomtest

from reinforcement_assets.core.evaluation import classification_metrics, decide_promotion, mcnemar_exact


def test_classification_metrics_are_macro_averaged():
    y_true = ["a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "b", "b", "b", "c", "a"]
    m = classification_metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # precision: a 1/2, b 2/3, c 1/1; recall: a 1/2, b 1, c 1/2
    assert m["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["n"] == 6


def test_metrics_of_nothing_are_nan():
    assert math.isnan(classification_metrics([], [])["accuracy"])


def paired(champion_only, challenger_only, both=50, neither=10):
    """Labels and predictions with the given discordant pair counts."""
    y, champ, chall = [], [], []
    for n, (c1, c2) in [(champion_only, (1, 0)), (challenger_only, (0, 1)), (both, (1, 1)), (neither, (0, 0))]:
        y += ["a"] * n
        champ += ["a" if c1 else "b"] * n
        chall += ["a" if c2 else "b"] * n
    return np.array(y, dtype=object), np.array(champ, dtype=object), np.array(chall, dtype=object)


def test_mcnemar_exact_is_the_one_sided_binomial_test_on_discordant_pairs():
    y, champ, chall = paired(champion_only=15, challenger_only=4)
    n01, n10, p = mcnemar_exact(y, champ, chall)
    assert (n01, n10) == (15, 4)
    assert p == pytest.approx(binomtest(15, 19, 0.5, alternative="greater").pvalue)
    assert mcnemar_exact(*paired(0, 0))[2] == 1.0


def test_a_better_challenger_is_promoted():
    decision = decide_promotion(*paired(champion_only=3, challenger_only=30))
    assert decision.promote and decision.accuracy_delta > 0
    # 3 + 30 discordant pairs, 50 both right, 10 both wrong: 93 holdout rows.
    assert (decision.champion_only_correct, decision.challenger_only_correct, decision.holdout_rows) == (3, 30, 93)
    assert decision.accuracy_delta == pytest.approx(27 / 93)
    assert decision.p_value == pytest.approx(binomtest(3, 33, 0.5, alternative="greater").pvalue)


def test_a_significantly_worse_challenger_is_kept_out():
    decision = decide_promotion(*paired(champion_only=30, challenger_only=5))
    assert not decision.promote and "significantly worse" in decision.reason
    assert decision.p_value < 0.05


def test_a_slightly_worse_challenger_is_kept_out_by_the_margin():
    y, champ, chall = paired(champion_only=6, challenger_only=4, both=500)
    assert decide_promotion(y, champ, chall).promote is False
    assert decide_promotion(y, champ, chall, non_inferiority_margin=0.01).promote is True


def test_a_holdout_too_small_to_tell_refuses_promotion():
    decision = decide_promotion(*paired(0, 5, both=5, neither=0))
    assert not decision.promote and "holdout has 10 rows" in decision.reason


def test_a_challenger_that_changes_nothing_is_not_promoted():
    y, champ, _ = paired(champion_only=0, challenger_only=0, both=80, neither=20)
    decision = decide_promotion(y, champ, champ.copy())
    assert not decision.promote and "nothing to gain" in decision.reason
