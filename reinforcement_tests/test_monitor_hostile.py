"""The Monitoring page against a careless or hostile client: odd Host and Origin headers, methods the
routes do not expect, bodies that are not what they claim, markup in what users type, a store that
is down. Every refusal is a clear 4xx (or 503) and writes nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from reinforcement_assets.backends.postgres_store import PostgresStore
from reinforcement_assets.monitor import Access, MonitorSettings, create_app

from .test_monitor import SAME_ORIGIN, TOKEN, USER, client

PASSWORD = "hunter2-very-secret"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("host", ["evil.example:8765", "localhost.:8765", "127.0.0.1.evil.example:8765",
                                  "testserver:8766", "testserver:", "testserver:²".encode("latin-1"), "testserver:8765:8765",
                                  "[::ffff:7f00:1]:8765", "", " "])
def test_a_host_header_not_naming_the_bind_is_refused_not_crashed(store, artifacts, host):
    assert client(store, artifacts).get("/api/status", headers={"Host": host}).status_code == 421


@pytest.mark.parametrize("host", ["TESTSERVER:8765", "LocalHost:8765", "127.0.0.1:8765", "[::1]:8765", "localhost"])
def test_the_names_of_the_bind_are_accepted_in_any_case(store, artifacts, host):
    assert client(store, artifacts).get("/api/status", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("origin", ["null", "http://testserver:8765.evil.example", "https://testserver:8765",
                                    "http://testserver:8766", "http://testserver", "http://evil.example",
                                    "http://testserver:8765/../", ""])
def test_writes_from_any_other_origin_are_refused(store, artifacts, origin):
    refused = client(store, artifacts).post("/api/requests", json={"reason": "x"}, headers={"Origin": origin})
    assert refused.status_code == 403 and store.latest_requests(10) == []


def test_head_and_other_methods_never_write(store, artifacts):
    api = client(store, artifacts)
    body = b'{"reason": "sent with HEAD, no Origin"}'
    for method in ("HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"):
        answer = api.request(method, "/api/requests", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code in ((200,) if method == "HEAD" else (403, 405)), (method, answer.status_code)
    assert store.latest_requests(10) == []
    assert api.head("/api/status").status_code == 200  # reads still answer HEAD


@pytest.mark.parametrize("body", [b'{"reason": "' + b"\xff\xfe" * 10 + b'"}', b'{"a":' * 2500 + b'1' + b'}' * 2500,
                                  b"[" * 8000 + b"]" * 8000, b'{"reason": "x", "priority": ' + b"9" * 5000 + b"}",
                                  b"\x00", b'{"reason": "x", "from_scratch": NaN}'])
def test_a_malformed_body_is_a_clear_400(store, artifacts, body):
    refused = client(store, artifacts).post("/api/requests", content=body, headers=SAME_ORIGIN)
    assert refused.status_code == 400 and refused.json()["error"], refused.text
    assert store.latest_requests(10) == []


def test_a_body_streamed_without_a_length_is_cut_at_the_limit(store, artifacts):
    def chunks():
        yield b'{"reason": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    refused = client(store, artifacts).post("/api/requests", content=chunks(), headers=SAME_ORIGIN)
    assert refused.status_code == 413 and store.latest_requests(10) == []


@pytest.mark.parametrize("fields, message", [({"priority": None}, "unknown priority"),
                                             ({"priority": ["high"]}, "unknown priority"),
                                             ({"reason": 42}, "needs a reason"),
                                             ({"reason": "x" * 5000}, "characters long")])
def test_odd_field_values_are_refused(store, artifacts, fields, message):
    refused = client(store, artifacts).post("/api/requests", json={"reason": "x", **fields}, headers=SAME_ORIGIN)
    assert refused.status_code == 400 and message in refused.json()["error"], refused.text
    assert store.latest_requests(10) == []


@pytest.mark.parametrize("limit", ["0", "501", "-1", "²", "1e3", "99999999999999999999999", " 5", ""])
def test_a_bad_limit_is_a_400(store, artifacts, limit):
    refused = client(store, artifacts).get("/api/runs", params={"limit": limit})
    assert refused.status_code == 400 and "limit" in refused.json()["error"]


def test_markup_in_a_reason_is_shown_as_text(store, artifacts):
    api = client(store, artifacts)
    script = '<script>alert(1)</script>"\'><img src=x onerror=alert(2)>'
    assert api.post("/api/requests", json={"reason": script}, headers=SAME_ORIGIN).status_code == 201
    for path in ("/", "/partials/dashboard"):
        page = api.get(path).text
        assert script not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize("run_id", ["...", "%2e%2e", "..%2f..%2fetc%2fpasswd", "x%00y", "%C0%AE%C0%AE"])
def test_a_run_id_cannot_reach_outside_the_logs(store, artifacts, run_id):
    api = client(store, artifacts)
    assert api.get(f"/runs/{run_id}/log").status_code == 404
    assert api.get(f"/runs/{run_id}").status_code == 404
    assert api.get(f"/api/runs/{run_id}").status_code == 404


def test_unknown_and_malformed_request_ids_and_cancelling_twice(store, artifacts):
    api = client(store, artifacts)
    assert api.get("/api/requests/not-a-uuid").status_code == 404
    assert api.get("/api/requests/00000000-0000-0000-0000-000000000000").status_code == 404
    assert api.post("/api/requests/not-a-uuid/cancel", headers=SAME_ORIGIN).status_code in (404, 409)
    pending = store.create_request("by mistake")
    assert api.post(f"/api/requests/{pending.id}/cancel", headers=SAME_ORIGIN).status_code == 200
    twice = api.post(f"/api/requests/{pending.id}/cancel", headers=SAME_ORIGIN)  # the same answer
    assert twice.status_code == 200 and twice.json()["status"] == "cancelled"
    store.create_request("now running")
    (claimed,) = store.claim_requests(1, "a-sensor")
    late = api.post(f"/api/requests/{claimed.id}/cancel", headers=SAME_ORIGIN)
    assert late.status_code == 409 and "not pending" in late.json()["error"]
    assert store.get_request(claimed.id).status == "processing"


def test_login_refuses_wrong_tokens_and_forged_cookies(store, artifacts):
    api = client(store, artifacts, Access.for_bind("0.0.0.0", 8765, TOKEN, extra_hosts=["testserver"]))
    for wrong in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "x" * 10_000):
        assert api.post("/login", data={"token": wrong}, headers=SAME_ORIGIN).status_code in (401, 413)
    assert api.post("/login", data={"token": TOKEN}).status_code == 403  # login CSRF: no Origin
    api.cookies.set("reinforcement_monitor_session", TOKEN)
    assert api.get("/api/status").status_code == 401
    api.cookies.set("reinforcement_monitor_session", "0" * 64)
    assert api.get("/api/status").status_code == 401
    assert api.get("/api/status", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert api.get("/api/status", headers={"Authorization": f"Bearer {TOKEN[:-1]}"}).status_code == 401


def test_a_store_that_is_down_is_a_503_that_names_no_password(artifacts):
    url = f"postgresql://loop:{PASSWORD}@127.0.0.1:{closed_port()}/loop"
    down = PostgresStore(database_url=url)
    api = client(down, artifacts)
    for path in ("/api/status", "/api/changes", "/api/runs", "/"):
        answer = api.get(path)
        assert answer.status_code == 503, (path, answer.status_code)
        assert PASSWORD not in answer.text and "could not answer" in answer.text
    wrote = api.post("/api/requests", json={"reason": "x"}, headers=SAME_ORIGIN)
    assert wrote.status_code >= 400 and PASSWORD not in wrote.text


# --- over real HTTP: what a test client cannot send --------------------------------------------

@pytest.fixture
def real_server(store, artifacts):
    """The page served by uvicorn on a free loopback port; yields the port."""
    port = closed_port()
    app = create_app(store, artifacts, Access.for_bind("127.0.0.1", port, None), MonitorSettings(requested_by=USER))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the monitor did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def raw(port: int, request: bytes) -> int:
    """The status code uvicorn answers a hand-written request with."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ")[1])


def test_raw_requests_with_odd_host_lines_and_paths(real_server):
    port = real_server
    ok = f"127.0.0.1:{port}".encode()
    assert raw(port, b"GET /api/changes HTTP/1.1\r\nHost: " + ok + b"\r\n\r\n") == 200
    assert raw(port, b"GET /api/changes HTTP/1.1\r\nHost: 127.0.0.1:\xb2\r\n\r\n") in (400, 421)
    assert raw(port, b"GET /api/changes HTTP/1.0\r\n\r\n") in (400, 421)  # no Host at all
    assert raw(port, b"GET /api/changes HTTP/1.1\r\nHost: evil.example\r\nHost: " + ok + b"\r\n\r\n") in (400, 421)
    for path in (b"/static/../api/status", b"/static/..%2f..%2fmonitor%2fapp.py", b"/runs/..%2f..%2fetc%2fpasswd/log",
                 b"/static/%2e%2e/app.py"):
        assert raw(port, b"GET " + path + b" HTTP/1.1\r\nHost: " + ok + b"\r\n\r\n") == 404, path


def test_a_chunked_post_without_a_length_is_cut_at_the_limit(real_server, store):
    port = real_server
    head = (f"POST /api/requests HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b'"' + b"x" * 4000 + b'"'
    body = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(6)) + b"0\r\n\r\n"
    assert raw(port, head + body) == 413
    assert store.latest_requests(10) == []


# --- the CLI ------------------------------------------------------------------------------------

def monitor_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "reinforcement_assets.cli", "monitor", *args]


def test_the_cli_refuses_a_bad_requester_and_a_bad_port(database_url, tmp_path):
    env = {**os.environ, "REINFORCEMENT_DATABASE_URL": database_url, "REINFORCEMENT_DATA_DIR": str(tmp_path)}
    env.pop("REINFORCEMENT_MONITOR_TOKEN", None)
    for args, message in [(["--requested-by", "alice"], "requested_by must be a user id"),
                          (["--port", "70000"], "port"), (["--port", "0"], "port"),
                          (["--host", "[::1]"], "")]:
        done = subprocess.run(monitor_command(*args), env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and message in done.stderr, (args, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)


def test_ctrl_c_stops_the_cli_within_2_s_while_a_page_polls(database_url, tmp_path):
    port = closed_port()
    env = {**os.environ, "REINFORCEMENT_DATABASE_URL": database_url, "REINFORCEMENT_DATA_DIR": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("REINFORCEMENT_MONITOR_TOKEN", None)
    server = subprocess.Popen(monitor_command("--port", str(port), "--requested-by", USER), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "Monitoring page on http://127.0.0.1" in server.stdout.readline()
        polling = threading.Event()

        def poll():  # a page's poll, over one kept-alive connection
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as page:
                while True:
                    try:
                        assert page.get("/api/changes").status_code == 200
                    except httpx.TransportError:
                        return
                    polling.set()
                    time.sleep(0.2)

        threading.Thread(target=poll, daemon=True).start()
        assert polling.wait(30), "the page could not poll"
        started = time.monotonic()
        server.send_signal(signal.SIGINT)
        server.wait(10)
        took = time.monotonic() - started
    finally:
        server.kill()
    assert took < 2.0, f"Ctrl-C took {took:.2f} s"
    assert "Traceback" not in server.stderr.read()
