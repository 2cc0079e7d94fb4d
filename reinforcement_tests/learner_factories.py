"""Learner factories named by import path in tests (`reinforcement_tests.learner_factories:…`)."""

from sklearn.ensemble import ExtraTreesClassifier
from sklearn.linear_model import LinearRegression


def extra_trees():
    return ExtraTreesClassifier(n_estimators=20, random_state=0)


def regressor():
    return LinearRegression()


def nothing():
    return None


def a_class():
    return ExtraTreesClassifier


def broken():
    raise RuntimeError("the feature store is down")


class Hanging(ExtraTreesClassifier):
    """A classifier whose fit never returns: it writes `$HANGING_MARKER` and blocks until its process is killed."""

    def fit(self, X, y, sample_weight=None):
        import os
        import threading
        from pathlib import Path

        Path(os.environ["HANGING_MARKER"]).write_text(str(os.getpid()))
        threading.Event().wait()


def hanging():
    return Hanging(n_estimators=5, random_state=0)
