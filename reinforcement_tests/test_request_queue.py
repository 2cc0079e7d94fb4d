"""Request validation and run requests: the pure functions shared by the stores and the request sensor."""

from datetime import datetime, timedelta, timezone

import pytest

from reinforcement_assets.backends.store import RetrainingRequest
from reinforcement_assets.defs.request_queue import (
    InvalidRequest,
    RequestOptions,
    check_new_request,
    check_request_run,
    parse_options,
    queue_order,
    run_request_for,
)

T0 = datetime(2026, 11, 26, tzinfo=timezone.utc)


def request(id="0b5e4c4a-7a43-4d55-8f6a-1b2c3d4e5f60", **values) -> RetrainingRequest:
    return RetrainingRequest(id=id, status=values.pop("status", "processing"), **values)


def test_options_are_two_booleans_and_nothing_else():
    assert parse_options(None) == parse_options({}) == RequestOptions()
    assert parse_options({"force": True}) == RequestOptions(force=True)
    for raw, message in [([1], "must be a JSON object, got list"), ("force", "must be a JSON object"),
                         ({"force": 1}, "'force' must be true or false, got 1"),
                         ({"epochs": 3, "turbo": True}, "unknown option(s) 'epochs', 'turbo'")]:
        with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_options(raw)


def test_a_new_request_is_checked_before_it_is_queued():
    assert check_new_request("high", {"from_scratch": True}, "0B5E4C4A-7A43-4D55-8F6A-1B2C3D4E5F60") == (
        "high", RequestOptions(from_scratch=True), "0b5e4c4a-7a43-4d55-8f6a-1b2c3d4e5f60")
    with pytest.raises(InvalidRequest, match="unknown priority 'urgent'; allowed: high, normal, low"):
        check_new_request("urgent", {}, None)
    with pytest.raises(InvalidRequest, match="requested_by must be a user id"):
        check_new_request("low", {}, "bob")


def test_queue_order_is_priority_then_age():
    old_low = request("a", priority="low", created_at=T0)
    new_high = request("b", priority="high", created_at=T0 + timedelta(hours=2))
    old_high = request("c", priority="high", created_at=T0 + timedelta(hours=1))
    normal = request("d", priority="normal", created_at=T0)
    assert [r.id for r in queue_order([old_low, new_high, old_high, normal])] == ["c", "b", "d", "a"]


def test_a_run_request_carries_the_request():
    run = run_request_for(request(priority="low", options={"from_scratch": True, "force": False},
                                  requested_by="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"))
    assert run.run_key == "0b5e4c4a-7a43-4d55-8f6a-1b2c3d4e5f60"
    assert run.tags["dagster/priority"] == "-10" and run.tags["triggered_by"].startswith("9a8b7c6d")
    assert run.run_config == {"ops": {"finetune_dataset": {"config": {"from_scratch": True, "force": False}}}}
    assert run.tags["triggered_by"] == "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    assert run.tags["request_id"] == run.run_key and run.tags["request_priority"] == "low"
    assert run.tags["source"] == "manual"
    with pytest.raises(InvalidRequest, match="option 'from_scratch' must be true or false, got 'yes'"):
        run_request_for(request(options={"from_scratch": "yes"}))


def test_a_starting_run_refuses_a_cancelled_request_and_notes_a_re_execution():
    with pytest.raises(InvalidRequest, match="was cancelled before its run started"):
        check_request_run(request(status="cancelled"), "run-1")
    assert check_request_run(request(dagster_run_id="run-1"), "run-1") is None
    note = check_request_run(request(status="failed", dagster_run_id="run-1"), "run-2")
    assert "belongs to run run-1" in note and "not linked" in note


def test_a_row_from_postgrest_becomes_a_record():
    row = {"id": "0b5e4c4a-7a43-4d55-8f6a-1b2c3d4e5f60", "status": "pending", "priority": "high", "options": None,
           "created_at": "2026-11-26T07:35:16.123456+00:00", "claim_count": None, "unexpected": 1}
    record = RetrainingRequest.from_row(row)
    assert record.created_at == T0.replace(hour=7, minute=35, second=16, microsecond=123456)
    assert record.options == {} and record.claim_count == 0 and not record.is_terminal
