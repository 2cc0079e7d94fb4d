"""What the Monitoring page and its JSON API show, from the store's plain records (pure: no I/O).

A run row of `model_retraining_runs` becomes a `RunView` (badge, source, metrics, the gate's card); the
JSON API serialises the same views, so the page and a user's own dashboard never disagree.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from ..core.records import ModelVersion, RetrainingRequest, parse_timestamp

SOURCES = {"auto_daily": "schedule", "manual": "request", "decay_triggered": "decay"}
RUN_STATUSES = ("pending", "running", "completed", "failed", "skipped")
METRICS = ("accuracy", "precision", "recall", "f1")


@dataclass(frozen=True)
class Candidate:
    """One challenger's line on the gate's card."""

    name: str
    test: str | None
    metric: str | None
    candidate: float | None
    champion: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    adjusted_p_value: float | None
    passed: bool
    won: bool
    reason: str | None


@dataclass(frozen=True)
class GateCard:
    """Whether a run promoted its challenger and why, in plain words, with the test behind it."""

    promoted: bool
    headline: str
    reason: str | None
    metric: str | None
    margin: float | None
    significance_level: float | None
    holdout_rows: int | None
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class RunView:
    """A retraining run as the page shows it."""

    dagster_run_id: str | None
    status: str
    source: str
    source_label: str
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    dataset_size: int | None
    fine_tuned: bool | None
    model_version: str | None
    champion_version: str | None
    challenger: dict[str, float | None]
    champion: dict[str, float | None]
    promoted: bool | None
    error_message: str | None
    request_id: str | None
    log_url: str | None
    gate: GateCard | None = None


@dataclass(frozen=True)
class RequestView:
    """A retraining request as the page shows it."""

    id: str
    status: str
    priority: str
    reason: str | None
    requested_by: str | None
    from_scratch: bool
    created_at: datetime | None
    processed_at: datetime | None
    dagster_run_id: str | None
    error_message: str | None

    @property
    def cancellable(self) -> bool:
        return self.status == "pending"


@dataclass(frozen=True)
class VersionView:
    """A row of the model registry as the champion's history shows it."""

    version: str
    is_champion: bool
    promoted_at: datetime | None
    promotion_reason: str | None
    parent_version: str | None
    sha256: str
    created_at: datetime | None
    fine_tuned: bool
    reference_accuracy: float | None
    pruned: bool
    training_run_id: str | None = None
    ever_champion: bool = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "ever_champion", self.promoted_at is not None)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _metrics(values: Any) -> dict[str, float | None]:
    values = values if isinstance(values, dict) else {}
    return {name: _number(values.get(name)) for name in METRICS}


def gate_card(metrics: dict[str, Any]) -> GateCard | None:
    """The gate's card from a run's metrics (None for a run that never reached the gate)."""
    gate = metrics.get("gate")
    if not isinstance(gate, dict):
        return None
    promoted = bool(gate.get("promote", metrics.get("promoted")))
    candidates = tuple(
        Candidate(name=str(c.get("name")), test=c.get("test"), metric=c.get("metric"),
                  candidate=_number(c.get("candidate")), champion=_number(c.get("champion")),
                  delta=_number(c.get("delta")), ci_low=_number(c.get("ci_low")), ci_high=_number(c.get("ci_high")),
                  p_value=_number(c.get("p_value")), adjusted_p_value=_number(c.get("adjusted_p_value")),
                  passed=bool(c.get("passed")), won=bool(c.get("won")), reason=c.get("reason"))
        for c in gate.get("candidates") or [] if isinstance(c, dict))
    rows = next((c.get("holdout_rows") for c in gate.get("candidates") or [] if isinstance(c, dict)), None)
    winner = gate.get("winner")
    if promoted:
        headline = f"Promoted {winner or 'the challenger'}: the gate showed it is not worse than the champion"
    elif candidates:
        headline = "Champion kept: no challenger was shown to be at least as good"
    else:
        headline = "Champion kept"
    return GateCard(promoted=promoted, headline=headline, reason=gate.get("reason"), metric=gate.get("metric"),
                    margin=_number(gate.get("margin")), significance_level=_number(gate.get("significance_level")),
                    holdout_rows=rows if isinstance(rows, int) else None, candidates=candidates)


def run_view(row: dict[str, Any]) -> RunView:
    """A `model_retraining_runs` row (psycopg values or PostgREST JSON) as the page shows it."""
    metrics = row.get("metrics") if isinstance(row.get("metrics"), dict) else {}
    started, completed = parse_timestamp(row.get("started_at")), parse_timestamp(row.get("completed_at"))
    promoted = metrics.get("promoted")
    return RunView(
        dagster_run_id=row.get("dagster_run_id"), status=row.get("status") or "pending",
        source=row.get("source") or "", source_label=SOURCES.get(row.get("source"), row.get("source") or "unknown"),
        created_at=parse_timestamp(row.get("created_at")), started_at=started, completed_at=completed,
        duration_seconds=(completed - started).total_seconds() if started and completed else None,
        dataset_size=row.get("dataset_size"), fine_tuned=row.get("fine_tune_flag"),
        model_version=row.get("model_version"), champion_version=metrics.get("champion_version"),
        challenger=_metrics(metrics), champion=_metrics(metrics.get("champion")),
        promoted=None if promoted is None else bool(promoted), error_message=row.get("error_message"),
        request_id=None if row.get("request_id") is None else str(row["request_id"]), log_url=row.get("log_url"),
        gate=gate_card(metrics),
    )


def request_view(request: RetrainingRequest) -> RequestView:
    options = request.options if isinstance(request.options, dict) else {}
    return RequestView(id=request.id, status=request.status, priority=request.priority, reason=request.reason,
                       requested_by=request.requested_by, from_scratch=bool(options.get("from_scratch")),
                       created_at=request.created_at, processed_at=request.processed_at,
                       dagster_run_id=request.dagster_run_id, error_message=request.error_message)


def version_view(version: ModelVersion) -> VersionView:
    return VersionView(version=version.version, is_champion=version.is_champion, promoted_at=version.promoted_at,
                       promotion_reason=version.promotion_reason, parent_version=version.parent_version,
                       sha256=version.sha256, created_at=version.created_at, fine_tuned=version.fine_tuned,
                       reference_accuracy=version.reference_accuracy, pruned=version.artifact_pruned_at is not None,
                       training_run_id=version.training_run_id)


def fingerprint(runs: list[RunView], requests: list[RequestView], champion: str | None) -> str:
    """Changes whenever a shown run or request changes status (or a new one appears), or the champion
    changes: the page polls it and reloads its data only then."""
    parts = [champion or ""]
    parts += [f"{r.dagster_run_id}:{r.status}:{r.completed_at}:{r.model_version}" for r in runs]
    parts += [f"{r.id}:{r.status}:{r.dagster_run_id}" for r in requests]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def as_json(value: Any) -> Any:
    """A view (dataclass, list, datetime...) as JSON-ready values: ISO 8601 times, no NaN."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: as_json(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return None
    return value
