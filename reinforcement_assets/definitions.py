"""The Dagster code location: `dagster dev` loads `defs` from here."""

import dagster as dg

from . import settings
from .defs.assets import asset_checks, assets
from .defs.automation import auto_daily, retraining_job, run_executor
from .defs.resources import default_resources
from .defs.sensors import sensors

settings.configure_logging()

defs = dg.Definitions(
    assets=assets,
    asset_checks=asset_checks,
    jobs=[retraining_job],
    schedules=[auto_daily],
    sensors=sensors,
    resources=default_resources(),
    executor=run_executor(),  # also for the UI's "Materialize" (Dagster's implicit asset job)
)
