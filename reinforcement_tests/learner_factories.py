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
