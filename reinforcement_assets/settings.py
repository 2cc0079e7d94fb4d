"""Defaults, each overridable by an environment variable of the same name and by run config."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from pydantic import Field

from .core.learners import check_learner
from .core.metrics import check_gate_metric
from .core.retention import check_keep_count

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting (an environment variable) has a value the loop cannot use; the message names it."""


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take; `field` gives the same bounds to a run config field."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __contains__(self, value: float) -> bool:
        return (math.isfinite(value) and (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self) -> str:
        """`at least 1`, `strictly between 0 and 1`, ..."""
        low = f"{self.ge:g}" if self.ge is not None else f"{self.gt:g}" if self.gt is not None else None
        high = f"{self.le:g}" if self.le is not None else f"{self.lt:g}" if self.lt is not None else None
        if low is not None and high is not None:
            brackets = ("[" if self.ge is not None else "(") + ("]" if self.le is not None else ")")
            return f"in {brackets[0]}{low}, {high}{brackets[1]}"
        if low is not None:
            return f"at least {low}" if self.ge is not None else f"more than {low}"
        return f"at most {high}" if self.le is not None else f"less than {high}"

    def field(self, default: Any) -> Any:
        """A pydantic `Field` with these bounds (Dagster checks them when a run reads its config)."""
        return Field(default=default, ge=self.ge, gt=self.gt, le=self.le, lt=self.lt,
                     description=f"{self.describe()}")


COUNT = Range(ge=0)  # 0 or more
POSITIVE_COUNT = Range(ge=1)  # rows to load, epochs, attempts: at least 1
POSITIVE = Range(gt=0)  # days, hours, a learning rate
NON_NEGATIVE = Range(ge=0)  # a ratio, a margin, a growth
SHARE = Range(gt=0, lt=1)  # a holdout share, a significance level
PROBABILITY = Range(ge=0, le=1)  # a confidence threshold, a drop in accuracy
MARGIN = Range(ge=0, lt=1)  # in the gate metric (a share): 1 or more would let any model through


def _from_env(name: str, default: T, parse: Callable[[str], T], allowed: Range | None = None) -> T:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw)
    except ValueError as exc:
        detail = f": {exc}" if str(exc) and str(exc) != raw else ""
        raise SettingsError(f"environment variable {name}={raw!r} is not a valid {type(default).__name__}"
                            f"{detail}") from exc
    if allowed is not None and value not in allowed:
        raise SettingsError(f"environment variable {name}={raw!r} is out of range: it must be {allowed.describe()}")
    return value


def _choice(raw: str, choices: tuple[str, ...]) -> str:
    if raw.strip().lower() not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}")
    return raw.strip().lower()


def _flag(raw: str) -> bool:
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


DEFAULT_LOOKBACK_DAYS = _from_env("DEFAULT_LOOKBACK_DAYS", 7.0, float, POSITIVE)
MIN_ERROR_SAMPLES_FOR_RETRAINING = _from_env("MIN_ERROR_SAMPLES_FOR_RETRAINING", 10, int, COUNT)
ERROR_CONFIDENCE_THRESHOLD = _from_env("ERROR_CONFIDENCE_THRESHOLD", 0.7, float, PROBABILITY)
DEFAULT_FINE_TUNE_EPOCHS = _from_env("DEFAULT_FINE_TUNE_EPOCHS", 5, int, POSITIVE_COUNT)
# Replay 1:1 at learning rate 0.01: the drift benchmark's evidence, docs/benchmarks.md.
DEFAULT_LEARNING_RATE = _from_env("DEFAULT_LEARNING_RATE", 0.01, float, POSITIVE)
REPLAY_RATIO = _from_env("REPLAY_RATIO", 1.0, float, NON_NEGATIVE)
# The family of a refit with no champion yet (a built-in name or package.module:factory); docs/benchmarks.md.
LEARNER = _from_env("REINFORCEMENT_LEARNER", "sgd", lambda raw: check_learner(raw.strip(), allow_import_path=True))
# Learners that race beside the champion's update and refit each cycle (comma-separated names or import paths).
CHALLENGERS = _from_env("CHALLENGERS", (), lambda raw: tuple(
    check_learner(name.strip(), allow_import_path=True) for name in raw.split(",") if name.strip()))
# A warm-start update adds this share of the registered size (trees, iterations); never past twice it.
UPDATE_GROWTH = _from_env("UPDATE_GROWTH", 0.25, float, NON_NEGATIVE)
# The holdout: the newest share of the window's usable rows, in (evaluated_at, id) order.
HOLDOUT_SHARE = _from_env("HOLDOUT_SHARE", 0.2, float, SHARE)
SIGNIFICANCE_LEVEL = _from_env("SIGNIFICANCE_LEVEL", 0.05, float, SHARE)
NON_INFERIORITY_MARGIN = _from_env("NON_INFERIORITY_MARGIN", 0.0, float, MARGIN)
# What the gate compares and the decay trigger watches: accuracy, balanced_accuracy or macro_f1.
GATE_METRIC = _from_env("GATE_METRIC", "accuracy", lambda raw: check_gate_metric(raw.strip()))
MAX_ERROR_ROWS = _from_env("MAX_ERROR_ROWS", 50_000, int, POSITIVE_COUNT)
MAX_TRAINING_ROWS = _from_env("MAX_TRAINING_ROWS", 200_000, int, POSITIVE_COUNT)
MAX_HOLDOUT_ROWS = _from_env("MAX_HOLDOUT_ROWS", 50_000, int, POSITIVE_COUNT)
# Storage stays bounded (`pruning`): the model files of this many recent candidates, and the asset outputs
# of this many recent runs, are kept besides the champion's line; older ones are deleted.
KEEP_CANDIDATE_ARTIFACTS = _from_env("KEEP_CANDIDATE_ARTIFACTS", 20, lambda raw: check_keep_count(int(raw)), COUNT)

# Triggers (see docs/triggers.md).
REQUEST_SENSOR_INTERVAL_SECONDS = _from_env("REQUEST_SENSOR_INTERVAL_SECONDS", 30, int, POSITIVE_COUNT)
REQUESTS_PER_TICK = _from_env("REQUESTS_PER_TICK", 25, int, POSITIVE_COUNT)
REQUEST_STALE_AFTER_MINUTES = _from_env("REQUEST_STALE_AFTER_MINUTES", 15.0, float, POSITIVE)
REQUEST_MAX_CLAIMS = _from_env("REQUEST_MAX_CLAIMS", 3, int, POSITIVE_COUNT)
WRITE_BACK_ATTEMPTS = _from_env("WRITE_BACK_ATTEMPTS", 6, int, POSITIVE_COUNT)
DECAY_SENSOR_INTERVAL_SECONDS = _from_env("DECAY_SENSOR_INTERVAL_SECONDS", 300, int, POSITIVE_COUNT)
DECAY_WINDOW_HOURS = _from_env("DECAY_WINDOW_HOURS", 24.0, float, POSITIVE)
DECAY_MIN_SAMPLES = _from_env("DECAY_MIN_SAMPLES", 200, int, POSITIVE_COUNT)
DECAY_MIN_DROP = _from_env("DECAY_MIN_DROP", 0.05, float, PROBABILITY)
DECAY_SIGNIFICANCE_LEVEL = _from_env("DECAY_SIGNIFICANCE_LEVEL", 0.01, float, SHARE)
DECAY_COOLDOWN_HOURS = _from_env("DECAY_COOLDOWN_HOURS", 24.0, float, NON_NEGATIVE)

# How a run executes its steps: "in_process" (one process, the default) or "multiprocess" (a process per step).
MONITOR_REFRESH_SECONDS = _from_env("MONITOR_REFRESH_SECONDS", 30.0, float, POSITIVE)
MONITOR_POLL_SECONDS = _from_env("MONITOR_POLL_SECONDS", 2.0, float, POSITIVE)
RUN_EXECUTOR = _from_env("RUN_EXECUTOR", "in_process", lambda raw: _choice(raw, ("in_process", "multiprocess")))

DEBUG = _from_env("DEBUG", False, _flag)
LOG_LEVEL = "DEBUG" if DEBUG else _from_env("LOG_LEVEL", "INFO", str).upper()

DATA_DIR = _from_env("REINFORCEMENT_DATA_DIR", ".reinforcement", str)

# The Supabase backend, chosen when SUPABASE_URL and SUPABASE_SERVICE_KEY are set (see README).
SUPABASE_BUCKET = _from_env("SUPABASE_BUCKET", "reinforcement-artifacts", str)
SUPABASE_TIMEOUT_SECONDS = _from_env("SUPABASE_TIMEOUT_SECONDS", 60.0, float, POSITIVE)


def configure_logging() -> None:
    """Send this package's log records at LOG_LEVEL (DEBUG when DEBUG is set) to stderr."""
    logger = logging.getLogger("reinforcement_assets")
    logger.setLevel(LOG_LEVEL)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
