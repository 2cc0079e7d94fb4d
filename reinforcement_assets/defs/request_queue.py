"""Retraining requests as runs: validating a request and turning it into a Dagster run request.

Pure functions, shared by every store backend (to refuse bad requests before they are queued)
and by the request sensor (to fail, with a clear reason, bad requests a web client queued).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from ..core.learners import InvalidLearner, check_learner
from ..core.records import REQUEST_PRIORITIES, RetrainingRequest

# Dagster's queued run coordinator launches higher `dagster/priority` values first (default 0).
RUN_PRIORITY = {"high": 10, "normal": 0, "low": -10}
PRIORITY_TAG = "dagster/priority"


class InvalidRequest(ValueError):
    """A retraining request that cannot be run; the message says why."""


@dataclass(frozen=True)
class RequestOptions:
    """What a request may ask of its run (`model_retraining_requests.options`)."""

    from_scratch: bool = False  # refit the champion's family on a window sample instead of updating it
    force: bool = False  # retrain even with fewer errors than MIN_ERROR_SAMPLES_FOR_RETRAINING
    learner: str | None = None  # a built-in learner to refit with; never an import path (anyone may write requests)

    def as_json(self) -> dict[str, Any]:
        flags = {"from_scratch": self.from_scratch, "force": self.force}
        return {**flags, "learner": self.learner} if self.learner else flags


OPTION_NAMES = tuple(RequestOptions.__dataclass_fields__)


def parse_options(raw: Any) -> RequestOptions:
    """The options of a request, or `InvalidRequest` naming what is wrong with them."""
    if raw is None:
        return RequestOptions()
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"options must be a JSON object, got {type(raw).__name__} {raw!r:.100}")
    unknown = sorted(set(raw) - set(OPTION_NAMES))
    if unknown:
        raise InvalidRequest(f"unknown option(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(OPTION_NAMES)}")
    for name, value in raw.items():
        if name == "learner":
            if value is not None:
                check_request_learner(value)
        elif not isinstance(value, bool):
            raise InvalidRequest(f"option {name!r} must be true or false, got {value!r:.100}")
    return RequestOptions(**raw)


def check_request_learner(value: Any) -> str:
    """A request's learner: a built-in name only, since import paths run code and anyone may queue a request."""
    if not isinstance(value, str):
        raise InvalidRequest(f"option 'learner' must be a learner name, got {value!r:.100}")
    try:
        return check_learner(value, allow_import_path=False)
    except InvalidLearner as exc:
        raise InvalidRequest(f"option 'learner': {exc}") from None


MAX_REASON_LENGTH = 2_000


def check_reason(reason: Any) -> str:
    """A request's reason, stripped: required, so that every run says why it was asked for."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidRequest("a request needs a reason: say why the model should be retrained")
    if len(reason.strip()) > MAX_REASON_LENGTH:
        raise InvalidRequest(f"the reason is {len(reason.strip()):,} characters long; at most {MAX_REASON_LENGTH:,}")
    return reason.strip()


def check_priority(priority: Any) -> str:
    if priority not in REQUEST_PRIORITIES:
        raise InvalidRequest(f"unknown priority {priority!r}; allowed: {', '.join(REQUEST_PRIORITIES)}")
    return priority


def check_new_request(priority: Any, options: Any, requested_by: Any = None) -> tuple[str, RequestOptions, str | None]:
    """Priority, options and requester of a request about to be queued, or `InvalidRequest`."""
    return check_priority(priority), parse_options(options), check_requester(requested_by)


def check_requester(requested_by: Any) -> str | None:
    if requested_by is None:
        return None
    try:
        return str(uuid.UUID(str(requested_by)))
    except ValueError:
        raise InvalidRequest(f"requested_by must be a user id (UUID), got {requested_by!r:.100}") from None


def queue_order(requests: Iterable[RetrainingRequest]) -> list[RetrainingRequest]:
    """Highest priority first, then oldest: the order the claim takes them in."""
    oldest = datetime.min.replace(tzinfo=timezone.utc)
    rank = {p: i for i, p in enumerate(REQUEST_PRIORITIES)}
    return sorted(requests, key=lambda r: (rank.get(r.priority, len(rank)), r.created_at or oldest, r.id))


def run_config(options: RequestOptions) -> dict[str, Any]:
    """Run config carrying the request's options to the `finetune_dataset` and `retrained_model` assets."""
    ops: dict[str, Any] = {}
    if options.from_scratch or options.force:
        ops["finetune_dataset"] = {"config": {"from_scratch": options.from_scratch, "force": options.force}}
    if options.learner:
        ops["retrained_model"] = {"config": {"learner": check_request_learner(options.learner)}}
    return {"ops": ops} if ops else {}


def run_tags(request: RetrainingRequest) -> dict[str, str]:
    """Tags of the request's run: read by `evaluation_log` and by the write-back sensors."""
    tags = {
        "source": "manual",
        "request_id": request.id,
        "request_priority": request.priority,
        PRIORITY_TAG: str(RUN_PRIORITY.get(request.priority, 0)),
    }
    if request.requested_by:
        tags["triggered_by"] = request.requested_by
    return tags


def run_request_for(request: RetrainingRequest) -> dg.RunRequest:
    """The run request for a claimed request; its run key is the request id, so Dagster never runs it twice.

    Raises `InvalidRequest` when the request cannot run.
    """
    _, options, _ = check_new_request(request.priority, request.options, request.requested_by)
    return dg.RunRequest(run_key=request.id, run_config=run_config(options), tags=run_tags(request))


def check_request_run(request: RetrainingRequest, dagster_run_id: str) -> str | None:
    """Whether a starting run may go on for `request`: raises for a cancelled request, notes a re-execution.

    Called with the request as `attach_request_run` left it.
    """
    if request.status == "cancelled" and request.dagster_run_id in (None, dagster_run_id):
        raise InvalidRequest(f"retraining request {request.id} was cancelled before its run started: not retraining")
    if request.dagster_run_id != dagster_run_id:
        return (f"retraining request {request.id} is {request.status} and belongs to run {request.dagster_run_id}; "
                "this run (a re-execution?) is not linked to it")
    return None
