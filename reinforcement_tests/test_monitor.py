"""The Monitoring page in a real browser (Debian's Chromium through Selenium and chromedriver), and its
JSON API and security through Starlette's test client, on the embedded PostgreSQL filled by the demo.

No daemon: the test runs the request sensor's tick and the run's write-back itself, and watches the
open page follow the request from pending to processing to completed.
"""

from __future__ import annotations

import html
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import uvicorn
from starlette.testclient import TestClient

from reinforcement_assets.backends.artifacts import LocalArtifactStorage
from reinforcement_assets.cli import main
from reinforcement_assets.demo import deploy_initial_model, drift_scenario, log_traffic
from reinforcement_assets.defs.sensors import make_request_sensor, make_write_back_sensors
from reinforcement_assets.monitor import Access, MonitorRefused, MonitorSettings, create_app
from reinforcement_assets.monitor.security import host_name

from .test_sensors import launch, retraining, tick

USER = "5d0c7b3a-2e4f-4a1b-9c8d-7e6f5a4b3c2d"
TOKEN = "a-long-enough-monitor-token-0123456789"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def artifacts(tmp_path) -> LocalArtifactStorage:
    return LocalArtifactStorage(base_dir=str(tmp_path / "artifacts"))


@pytest.fixture
def demo_store(store, artifacts, resources):
    """The demo's world, as `reinforcement demo` makes it: the deployed model as champion, a drifting
    week of its predictions (2% broken), and one completed cycle that promoted a challenger."""
    scenario = drift_scenario(1200, seed=0)
    model = deploy_initial_model(store, artifacts, scenario, version="demo-v0")
    end = pd.Timestamp.now(tz="UTC")
    log, _ = log_traffic(model, *scenario.window, end - pd.Timedelta(days=7), end, model_version="demo-v0",
                         bad_row_share=0.02, seed=0)
    store.insert_evaluations(log)
    with dg.instance_for_test() as instance:
        assert retraining(resources).execute_in_process(instance=instance, tags={"source": "manual"}).success
    return store


@pytest.fixture
def files(artifacts) -> LocalArtifactStorage:
    return artifacts


def client(store, files, access: Access | None = None, **settings) -> TestClient:
    access = access or Access.for_bind("127.0.0.1", 8765, None, extra_hosts=["testserver"])
    app = create_app(store, files, access, MonitorSettings(requested_by=USER, **settings))
    return TestClient(app, base_url="http://testserver:8765")


SAME_ORIGIN = {"Origin": "http://testserver:8765"}


def test_status_api_reports_the_latest_run_the_champion_and_pending_requests(demo_store, files):
    api = client(demo_store, files)
    (row,) = demo_store.latest_runs(1)
    pending = demo_store.create_request("looks off", priority="high")
    status = api.get("/api/status").json()
    latest = status["latest_run"]
    assert latest["dagster_run_id"] == row["dagster_run_id"] and latest["status"] == "completed"
    assert latest["source"] == "manual" and latest["source_label"] == "request"
    assert latest["dataset_size"] == row["dataset_size"] > 0
    for metric in ("accuracy", "precision", "recall", "f1"):
        assert latest["challenger"][metric] == pytest.approx(row["metrics"][metric])
        assert latest["champion"][metric] == pytest.approx(row["metrics"]["champion"][metric])
    assert latest["gate"]["promoted"] == row["metrics"]["promoted"]
    assert {c["name"] for c in latest["gate"]["candidates"]} == {
        c["name"] for c in row["metrics"]["gate"]["candidates"]}
    assert status["champion"]["version"] == demo_store.champion().version
    assert [r["id"] for r in status["pending_requests"]] == [pending.id]


def test_requests_are_queued_as_the_cli_queues_them_and_bad_input_writes_nothing(demo_store, files):
    api = client(demo_store, files)
    made = api.post("/api/requests", json={"reason": " drift on Monday ", "priority": "low", "from_scratch": True},
                    headers=SAME_ORIGIN)
    assert made.status_code == 201, made.text
    queued = demo_store.get_request(made.json()["id"])
    assert (queued.status, queued.priority, queued.reason, queued.requested_by) == ("pending", "low",
                                                                                    "drift on Monday", USER)
    assert queued.options.get("from_scratch") is True and not queued.options.get("force")
    before = len(demo_store.latest_requests(100))
    for body, message in [({"reason": "  "}, "needs a reason"), ({"reason": "x", "priority": "urgent"},
                                                                   "unknown priority 'urgent'"),
                          ({"reason": "x", "from_scratch": "maybe"}, "from_scratch must be true or false"),
                          ({"reason": "x", "learner": "sgd"}, "unknown field(s) learner"),
                          (["x"], "must be a JSON object")]:
        refused = api.post("/api/requests", json=body, headers=SAME_ORIGIN)
        assert refused.status_code == 400 and message in refused.json()["error"], refused.text
    huge = api.post("/api/requests", content=b'{"reason": "' + b"x" * 20_000 + b'"}', headers=SAME_ORIGIN)
    assert huge.status_code == 413
    assert len(demo_store.latest_requests(100)) == before


def test_writes_only_from_the_page_own_origin_without_a_token(demo_store, files):
    api = client(demo_store, files)
    assert api.post("/api/requests", json={"reason": "x"}).status_code == 403  # no Origin: not the page
    assert api.post("/api/requests", json={"reason": "x"}, headers={"Origin": "http://evil.example"}).status_code == 403
    assert api.get("/api/status").status_code == 200  # reads are open on loopback
    assert demo_store.latest_requests(100) == []


def test_the_host_header_must_name_the_bind(demo_store, files):
    api = client(demo_store, files)
    assert api.get("/api/status", headers={"Host": "rebound.evil.example:8765"}).status_code == 421
    assert api.get("/api/status", headers={"Host": "testserver:9999"}).status_code == 421
    assert api.get("/api/status", headers={"Host": "localhost:8765"}).status_code == 200
    assert host_name("[::1]:8765") == ("::1", 8765) and host_name("x:y") == ("x", -1)


def test_a_bind_beyond_loopback_needs_a_token(database_url, capsys, monkeypatch):
    with pytest.raises(MonitorRefused, match="without a token"):
        Access.for_bind("0.0.0.0", 8765, None)
    monkeypatch.setenv("REINFORCEMENT_DATABASE_URL", database_url)
    monkeypatch.delenv("REINFORCEMENT_MONITOR_TOKEN", raising=False)
    assert main(["monitor", "--host", "0.0.0.0", "--port", "8765"]) == 2
    assert "refusing to serve on 0.0.0.0 without a token" in capsys.readouterr().err
    with pytest.raises(MonitorRefused, match="too short"):
        Access.for_bind("0.0.0.0", 8765, "short")


def test_with_a_token_every_request_needs_it_and_the_page_never_shows_it(demo_store, files):
    access = Access.for_bind("0.0.0.0", 8765, TOKEN, extra_hosts=["testserver"])
    api = client(demo_store, files, access)
    assert api.get("/api/status").status_code == 401
    assert api.get("/", follow_redirects=False).headers["location"] == "/login"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert api.get("/api/status", headers=bearer).status_code == 200
    assert api.post("/api/requests", json={"reason": "from a script"}, headers=bearer).status_code == 201
    assert api.post("/login", data={"token": "wrong"}, headers=SAME_ORIGIN).status_code == 401
    logged_in = api.post("/login", data={"token": TOKEN}, headers=SAME_ORIGIN, follow_redirects=False)
    assert logged_in.status_code == 303
    page = api.get("/")
    assert page.status_code == 200 and TOKEN not in page.text and TOKEN not in str(api.cookies)
    assert api.post("/api/requests", json={"reason": "cookie, no origin"}).status_code == 403  # CSRF
    assert api.post("/api/requests", json={"reason": "from the page"}, headers=SAME_ORIGIN).status_code == 201


def test_rollback_goes_through_the_compare_and_swap_and_refuses_what_the_cli_refuses(demo_store, files):
    api = client(demo_store, files)
    champion = demo_store.champion()
    deployed = champion.parent_version
    assert deployed is not None
    unknown = api.post("/api/rollback", json={"version": "nope", "reason": "x"}, headers=SAME_ORIGIN)
    assert unknown.status_code == 404 and "unknown model version nope" in unknown.json()["error"]
    no_reason = api.post("/api/rollback", json={"version": deployed, "reason": " "}, headers=SAME_ORIGIN)
    assert no_reason.status_code == 409 and "needs a reason" in no_reason.json()["error"]
    done = api.post("/api/rollback", json={"version": deployed, "reason": "the update misbehaves"},
                    headers=SAME_ORIGIN)
    assert done.status_code == 200, done.text
    assert demo_store.champion().version == deployed
    assert demo_store.champion().promotion_reason == f"rollback from {champion.version}: the update misbehaves"


def test_run_page_shows_the_gate_and_the_training_log(demo_store, files):
    api = client(demo_store, files)
    (row,) = demo_store.latest_runs(1)
    page = api.get(f"/runs/{row['dagster_run_id']}")
    assert page.status_code == 200
    assert row["metrics"]["gate"]["reason"] in html.unescape(page.text)
    log = api.get(f"/runs/{row['dagster_run_id']}/log")
    assert log.status_code == 200 and "\"epoch\": 1" in log.text
    assert api.get("/runs/no-such-run").status_code == 404


# --- in a real browser --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(demo_store, files):
    """The page served by uvicorn on a free loopback port, as `reinforcement monitor` serves it."""
    port = free_port()
    app = create_app(demo_store, files, Access.for_bind("127.0.0.1", port, None),
                     MonitorSettings(requested_by=USER, poll_seconds=0.5, refresh_seconds=30))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the monitor did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium from Debian's package; missing, it fails the test (CI installs it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), \
        "Debian's chromium and chromium-driver are needed: apt-get install chromium chromium-driver"
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1800", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_for(check, timeout: float = 15.0, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except Exception:  # the element is being replaced by a refresh
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} did not change within {timeout:g} s"
        time.sleep(0.1)


def request_status(browser, request_id: str) -> str | None:
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, f'tr.request[data-request-id="{request_id}"] .badge')
    return rows[0].text if rows else None


def test_the_page_shows_the_runs_and_follows_a_retrain_from_the_button_to_completed(
        served, browser, demo_store, resources, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(served)
    (row,) = demo_store.latest_runs(1)
    badge = browser.find_element(By.CSS_SELECTOR, f'tr.run[data-run-id="{row["dagster_run_id"]}"] .badge')
    assert badge.text == row["status"] == "completed"
    assert browser.find_element(By.ID, "latest-dataset-size").text == f"{row['dataset_size']:,}"
    for who, values in (("challenger", row["metrics"]), ("champion", row["metrics"]["champion"])):
        for metric in ("accuracy", "precision", "recall", "f1"):
            cell = browser.find_element(By.CSS_SELECTOR, f'#latest-{who} td[data-metric="{metric}"]')
            assert float(cell.text) == pytest.approx(values[metric], abs=5e-4)
    assert browser.find_element(By.CSS_SELECTOR, "#champion .version").text == demo_store.champion().version
    assert len(browser.find_elements(By.CSS_SELECTOR, "#charts svg")) == 3
    shots = Path(os.environ.get("MONITOR_SCREENSHOTS", tmp_path))
    browser.save_screenshot(str(shots / "monitor.png"))

    browser.find_element(By.ID, "reason").send_keys("accuracy dropped after the release")
    browser.find_element(By.ID, "priority").send_keys("high")
    browser.find_element(By.ID, "retrain-button").click()
    result = wait_for(lambda: browser.find_element(By.ID, "retrain-result").get_attribute("data-request-id"),
                      what="the retrain result")
    queued = demo_store.get_request(result)
    assert (queued.status, queued.priority, queued.requested_by) == ("pending", "high", USER)
    assert queued.reason == "accuracy dropped after the release"
    wait_for(lambda: request_status(browser, queued.id) == "pending", what="the new request")

    with dg.instance_for_test() as instance:
        succeeded = next(s for s in make_write_back_sensors() if s.name == "retraining_run_succeeded")
        cursor = tick(succeeded, instance, demo_store).cursor
        (run_request,) = tick(make_request_sensor(), instance, demo_store).run_requests
        wait_for(lambda: request_status(browser, queued.id) == "processing", what="the claimed request")
        run = launch(retraining(resources), instance, run_request)
        assert run.success
        tick(succeeded, instance, demo_store, cursor)
    assert demo_store.get_request(queued.id).status == "completed"
    wait_for(lambda: request_status(browser, queued.id) == "completed", what="the completed request")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'tr.run[data-run-id="{run.run_id}"]'),
             what="the new run")
    assert "data as of" in browser.find_element(By.ID, "refreshed").text
    browser.get(f"{served}/runs/{run.run_id}")
    assert "\"epoch\": 1" in browser.find_element(By.ID, "log").text
    browser.save_screenshot(str(shots / "monitor_run.png"))


def test_a_pending_request_is_cancelled_from_the_page(served, browser, demo_store):
    from selenium.webdriver.common.by import By

    pending = demo_store.create_request("queued by mistake")
    browser.get(served)
    browser.find_element(By.CSS_SELECTOR, f'button.cancel[data-request-id="{pending.id}"]').click()
    browser.switch_to.alert.accept()
    wait_for(lambda: request_status(browser, pending.id) == "cancelled", what="the cancelled request")
    assert demo_store.get_request(pending.id).status == "cancelled"
