"""The retraining job and the daily schedule."""

from __future__ import annotations

import dagster as dg

from .assets import GROUP

CYCLE_TAG = "reinforcement/cycle"

retraining_job = dg.define_asset_job(
    "retraining_job",
    selection=dg.AssetSelection.groups(GROUP),
    description="One retraining cycle: load the window, find errors, build the dataset, retrain, gate, record.",
    # The run queue's tag limit (deploy/dagster.yaml) keeps one cycle at a time on this tag.
    run_tags={CYCLE_TAG: "retraining"},
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
