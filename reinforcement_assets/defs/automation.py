"""The retraining job and the daily schedule."""

from __future__ import annotations

import dagster as dg

from .. import settings
from .assets import GROUP
from .instance import CYCLE_JOB, CYCLE_TAG, CYCLE_TAG_VALUE


def run_executor(name: str = settings.RUN_EXECUTOR) -> dg.ExecutorDefinition:
    """The executor of the graph's runs: every step in the run's process (`in_process`, the default: a
    cycle's steps are short and a process per step re-imports everything), or a process per step."""
    return dg.multiprocess_executor if name == "multiprocess" else dg.in_process_executor


retraining_job = dg.define_asset_job(
    CYCLE_JOB,
    selection=dg.AssetSelection.groups(GROUP),
    description="One retraining cycle: load the window, find errors, build the dataset, retrain, gate, record.",
    # The run queue's tag limit (deploy/dagster.yaml) keeps one cycle at a time on this tag.
    run_tags={CYCLE_TAG: CYCLE_TAG_VALUE},
    executor_def=run_executor(),
)

auto_daily = dg.ScheduleDefinition(
    name="auto_daily",
    job=retraining_job,
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    tags={"source": "auto_daily"},
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain every day at 02:00 UTC on the window ending at the tick.",
)
