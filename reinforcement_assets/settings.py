"""Defaults, each overridable by an environment variable of the same name and by run config."""

from __future__ import annotations

import logging
import os
from typing import Callable, TypeVar

from .core.learners import check_learner
from .core.metrics import check_gate_metric
from .core.records import check_holdout_share
from .core.retention import check_keep_count

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting (an environment variable) has a value the loop cannot use; the message names it."""


def _from_env(name: str, default: T, parse: Callable[[str], T]) -> T:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        detail = f": {exc}" if str(exc) and str(exc) != raw else ""
        raise SettingsError(f"environment variable {name}={raw!r} is not a valid {type(default).__name__}"
                            f"{detail}") from exc


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


DEFAULT_LOOKBACK_DAYS = _from_env("DEFAULT_LOOKBACK_DAYS", 7.0, float)
MIN_ERROR_SAMPLES_FOR_RETRAINING = _from_env("MIN_ERROR_SAMPLES_FOR_RETRAINING", 10, int)
ERROR_CONFIDENCE_THRESHOLD = _from_env("ERROR_CONFIDENCE_THRESHOLD", 0.7, float)
DEFAULT_FINE_TUNE_EPOCHS = _from_env("DEFAULT_FINE_TUNE_EPOCHS", 5, int)
# Replay 1:1 at learning rate 0.01: the drift benchmark's evidence, docs/benchmarks.md.
DEFAULT_LEARNING_RATE = _from_env("DEFAULT_LEARNING_RATE", 0.01, float)
REPLAY_RATIO = _from_env("REPLAY_RATIO", 1.0, float)
# The family of a refit with no champion yet (a built-in name or package.module:factory); docs/benchmarks.md.
LEARNER = _from_env("REINFORCEMENT_LEARNER", "sgd", lambda raw: check_learner(raw.strip(), allow_import_path=True))
# Learners that race beside the champion's update and refit each cycle (comma-separated names or import paths).
CHALLENGERS = _from_env("CHALLENGERS", (), lambda raw: tuple(
    check_learner(name.strip(), allow_import_path=True) for name in raw.split(",") if name.strip()))
# A warm-start update adds this share of the registered size (trees, iterations); never past twice it.
UPDATE_GROWTH = _from_env("UPDATE_GROWTH", 0.25, float)
# The holdout: the newest share of the window's usable rows, in (evaluated_at, id) order.
HOLDOUT_SHARE = _from_env("HOLDOUT_SHARE", 0.2, lambda raw: check_holdout_share(float(raw)))
SIGNIFICANCE_LEVEL = _from_env("SIGNIFICANCE_LEVEL", 0.05, float)
NON_INFERIORITY_MARGIN = _from_env("NON_INFERIORITY_MARGIN", 0.0, float)
# What the gate compares and the decay trigger watches: accuracy, balanced_accuracy or macro_f1.
GATE_METRIC = _from_env("GATE_METRIC", "accuracy", lambda raw: check_gate_metric(raw.strip()))
MAX_ERROR_ROWS = _from_env("MAX_ERROR_ROWS", 50_000, int)
MAX_TRAINING_ROWS = _from_env("MAX_TRAINING_ROWS", 200_000, int)
MAX_HOLDOUT_ROWS = _from_env("MAX_HOLDOUT_ROWS", 50_000, int)
# Storage stays bounded (`pruning`): the model files of this many recent candidates, and the asset outputs
# of this many recent runs, are kept besides the champion's line; older ones are deleted.
KEEP_CANDIDATE_ARTIFACTS = _from_env("KEEP_CANDIDATE_ARTIFACTS", 20, lambda raw: check_keep_count(int(raw)))

# Triggers (see docs/triggers.md).
REQUEST_SENSOR_INTERVAL_SECONDS = _from_env("REQUEST_SENSOR_INTERVAL_SECONDS", 30, int)
REQUESTS_PER_TICK = _from_env("REQUESTS_PER_TICK", 25, int)
REQUEST_STALE_AFTER_MINUTES = _from_env("REQUEST_STALE_AFTER_MINUTES", 15.0, float)
REQUEST_MAX_CLAIMS = _from_env("REQUEST_MAX_CLAIMS", 3, int)
WRITE_BACK_ATTEMPTS = _from_env("WRITE_BACK_ATTEMPTS", 6, int)
DECAY_SENSOR_INTERVAL_SECONDS = _from_env("DECAY_SENSOR_INTERVAL_SECONDS", 300, int)
DECAY_WINDOW_HOURS = _from_env("DECAY_WINDOW_HOURS", 24.0, float)
DECAY_MIN_SAMPLES = _from_env("DECAY_MIN_SAMPLES", 200, int)
DECAY_MIN_DROP = _from_env("DECAY_MIN_DROP", 0.05, float)
DECAY_SIGNIFICANCE_LEVEL = _from_env("DECAY_SIGNIFICANCE_LEVEL", 0.01, float)
DECAY_COOLDOWN_HOURS = _from_env("DECAY_COOLDOWN_HOURS", 24.0, float)

# How a run executes its steps: "in_process" (one process, the default) or "multiprocess" (a process per step).
RUN_EXECUTOR = _from_env("RUN_EXECUTOR", "in_process", lambda raw: _choice(raw, ("in_process", "multiprocess")))

DEBUG = _from_env("DEBUG", False, _flag)
LOG_LEVEL = "DEBUG" if DEBUG else _from_env("LOG_LEVEL", "INFO", str).upper()

DATA_DIR = _from_env("REINFORCEMENT_DATA_DIR", ".reinforcement", str)

# The Supabase backend, chosen when SUPABASE_URL and SUPABASE_SERVICE_KEY are set (see README).
SUPABASE_BUCKET = _from_env("SUPABASE_BUCKET", "reinforcement-artifacts", str)
SUPABASE_TIMEOUT_SECONDS = _from_env("SUPABASE_TIMEOUT_SECONDS", 60.0, float)


def configure_logging() -> None:
    """Send this package's log records at LOG_LEVEL (DEBUG when DEBUG is set) to stderr."""
    logger = logging.getLogger("reinforcement_assets")
    logger.setLevel(LOG_LEVEL)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
