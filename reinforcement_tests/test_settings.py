"""Settings from the environment: each numeric one refused out of its range, naming the variable."""

import json
import os
import subprocess
import sys

from reinforcement_assets import settings

OUT_OF_RANGE = {
    "MAX_ERROR_ROWS": "-1", "REPLAY_RATIO": "-2", "MIN_ERROR_SAMPLES_FOR_RETRAINING": "-1",
    "DEFAULT_FINE_TUNE_EPOCHS": "0", "DEFAULT_LEARNING_RATE": "0", "UPDATE_GROWTH": "-0.1",
    "SIGNIFICANCE_LEVEL": "1", "NON_INFERIORITY_MARGIN": "-0.01", "ERROR_CONFIDENCE_THRESHOLD": "1.5",
    "DEFAULT_LOOKBACK_DAYS": "0", "MAX_TRAINING_ROWS": "0", "MAX_HOLDOUT_ROWS": "0", "HOLDOUT_SHARE": "-0.5",
    "REQUESTS_PER_TICK": "0", "REQUEST_MAX_CLAIMS": "0", "DECAY_MIN_SAMPLES": "0", "DECAY_MIN_DROP": "2",
    "DECAY_SIGNIFICANCE_LEVEL": "0", "DECAY_WINDOW_HOURS": "-1", "DECAY_COOLDOWN_HOURS": "-1",
    "WRITE_BACK_ATTEMPTS": "0", "SUPABASE_TIMEOUT_SECONDS": "0", "KEEP_CANDIDATE_ARTIFACTS": "-1",
    "REQUEST_SENSOR_INTERVAL_SECONDS": "0", "DECAY_SENSOR_INTERVAL_SECONDS": "0",
    "REQUEST_STALE_AFTER_MINUTES": "0", "DEFAULT_LEARNING_RATE_NAN": "nan",
}

PROBE = """
import importlib, json, os, sys
from reinforcement_assets import settings
cases = json.loads(sys.argv[1])
found = {}
for name, raw in cases.items():
    variable = name.removesuffix("_NAN")
    os.environ[variable] = raw
    try:
        importlib.reload(settings)
        found[name] = None
    except settings.SettingsError as exc:
        found[name] = str(exc)
    del os.environ[variable]
print(json.dumps(found))
"""


def test_every_numeric_setting_out_of_range_is_refused_naming_it():
    env = {k: v for k, v in os.environ.items() if k not in OUT_OF_RANGE}
    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(OUT_OF_RANGE)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    for name, message in found.items():
        variable = name.removesuffix("_NAN")
        assert message is not None, f"{variable}={OUT_OF_RANGE[name]} was accepted"
        assert message.startswith(f"environment variable {variable}="), message


def test_ranges_read_as_they_check():
    assert 0 in settings.COUNT and -1 not in settings.COUNT and float("nan") not in settings.POSITIVE
    assert 0.5 in settings.SHARE and 0 not in settings.SHARE and 1 not in settings.SHARE
    assert 1 in settings.PROBABILITY and settings.PROBABILITY.describe() == "in [0, 1]"
    assert settings.POSITIVE_COUNT.describe() == "at least 1" and settings.POSITIVE.describe() == "more than 0"
