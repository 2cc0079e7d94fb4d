"""Recording a run that ended badly: by the failing step itself (a failure hook, at once, whatever
failed: the asset's body, loading its inputs, storing its output), else by the run-failure sensor.

Both write through `record_run_end` (one transaction: the run's row, and its request if any), which
never turns a run already recorded `completed` or `skipped` into a failure.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from ..backends.store import RUN_SOURCES, Store, as_uuid


def step_failure_message(step: str, error: BaseException) -> str:
    """How a step's failure reads in `model_retraining_runs.error_message`."""
    return f"{step}: {type(error).__name__}: {error}"


def record_failed_run(store: Store, run_id: str, tags: Mapping[str, str], message: str, *,
                      cancelled: bool = False) -> None:
    """The run's row `failed` with `message` (created if the run died before writing one), and its
    request failed (or cancelled). Safe to repeat: a message already recorded is kept."""
    request_id = as_uuid(tags.get("request_id"))
    source = tags.get("source") if tags.get("source") in RUN_SOURCES else "manual"
    store.record_run_end(run_id, "failed", message[:4000], source=source, request_id=request_id,
                         triggered_by=as_uuid(tags.get("triggered_by")),
                         request_status=("cancelled" if cancelled else "failed") if request_id else None)


@dg.failure_hook(required_resource_keys={"store"})
def record_step_failure(context: dg.HookContext) -> None:
    """A failed step settles its run's row and request at once, even when the failure happened outside
    the asset's body (Dagster's IO manager loading an input or storing the output), so an in-process run
    (the CLI, `dg.materialize`) is never left `running`. If the store is unreachable too, the
    run-failure sensor writes it back later."""
    error = context.op_exception
    message = step_failure_message(context.step_key, error) if error else f"{context.step_key}: the step failed"
    run = context.instance.get_run_by_id(context.run_id)
    try:
        record_failed_run(context.resources.store, context.run_id, run.tags if run else {}, message)
    except Exception as exc:  # the store may be what failed
        context.log.warning(f"could not record the failure; the run-failure sensor will: {exc}")
