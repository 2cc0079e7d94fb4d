"""What the Supabase store and the Supabase artifact storage share: the client, retries, errors.

Every call to Supabase goes through `call`, which retries what is safe to retry and turns
whatever the `supabase` client raises (`postgrest.APIError`, `StorageApiError`, raw `httpx`
errors) into one `StoreError` naming the operation and the table or bucket, never the key.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, TypeVar

import dagster as dg
import httpx
from postgrest import APIError
from pydantic import Field, PrivateAttr
from storage3.exceptions import StorageApiError

from supabase import Client, ClientOptions, create_client

from .store import StoreError

T = TypeVar("T")

# PostgREST answers these before running anything: it could not reach the database
# (PGRST000, PGRST001), its schema cache is not loaded (PGRST002) or no pool connection
# was free in time (PGRST003).
POSTGREST_NOT_RUN = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})
# The transaction was rolled back: serialization failure, deadlock.
ROLLED_BACK = frozenset({"40001", "40P01"})
# Gateway answers and overload: whatever was asked may or may not have happened.
GATEWAY_STATUSES = frozenset({"500", "502", "503", "504", "520", "521", "522", "523", "524"})
MISSING_SCHEMA = frozenset({"PGRST202", "PGRST205", "42P01", "42883"})


class Failure(enum.Enum):
    NOT_APPLIED = "the request provably did nothing"
    TRANSIENT = "may succeed if repeated, but may also have been applied"
    PERMANENT = "repeating it gives the same answer"


def classify(exc: BaseException) -> Failure:
    """How a failed call may be repeated."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return Failure.NOT_APPLIED  # never reached the server
    if isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return Failure.TRANSIENT
    if isinstance(exc, APIError):
        code = str(exc.code or "")
        if code in POSTGREST_NOT_RUN or code in ROLLED_BACK or code == "429":
            return Failure.NOT_APPLIED
        if code in GATEWAY_STATUSES or code.startswith("08") or (code.startswith("53") and code != "53400") \
                or code in ("57P01", "57P02", "57P03"):
            return Failure.TRANSIENT
        return Failure.PERMANENT
    if isinstance(exc, StorageApiError):
        status = str(exc.status)
        if status == "429":
            return Failure.NOT_APPLIED
        if status.startswith("5"):
            return Failure.TRANSIENT
    return Failure.PERMANENT


def may_retry(failure: Failure, idempotent: bool) -> bool:
    """Reads and idempotent writes repeat on any transient failure; other writes only when nothing happened."""
    return failure is Failure.NOT_APPLIED or (failure is Failure.TRANSIENT and idempotent)


def describe_failure(exc: BaseException, timeout_seconds: float) -> str:
    """A one-line account of what went wrong."""
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within the {timeout_seconds:g} s timeout ({type(exc).__name__})"
    if isinstance(exc, APIError):
        text = f"PostgREST error {exc.code}: {exc.message}" if exc.code else f"PostgREST error: {exc.message}"
        if exc.details:
            text += f" ({exc.details})"
        if exc.hint:
            text += f"; hint: {exc.hint}"
        if str(exc.code) in MISSING_SCHEMA:
            text += "; are the migrations in supabase/migrations applied (`supabase db push`)?"
        return text
    if isinstance(exc, StorageApiError):
        return f"Storage error {exc.status} {exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to repeat a call that failed transiently."""

    max_attempts: int = 4
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter before attempt `attempt + 1`."""
        return min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def call(
    fn: Callable[[], T], *, operation: str, target: str, idempotent: bool, policy: RetryPolicy,
    timeout_seconds: float, secret: str,
) -> T:
    """`fn()`, repeated on transient failures when safe; a `StoreError` naming `operation` and `target` otherwise."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except (APIError, StorageApiError, httpx.HTTPError) as exc:
            failure = classify(exc)
            if may_retry(failure, idempotent) and attempt < policy.max_attempts:
                time.sleep(policy.delay(attempt))
                continue
            message = f"{operation} ({target}) failed: {describe_failure(exc, timeout_seconds)}"
            if attempt > 1:
                message += f" (after {attempt} attempts)"
            if failure is Failure.TRANSIENT and not idempotent:
                message += "; the write may or may not have been applied, so it was not repeated"
            message = scrub(message, secret)
            leaks = bool(secret) and secret in str(exc)
            raise StoreError(message) from (None if leaks else exc)


def connect(url: str, service_key: str, http_client: httpx.Client) -> Client:
    """A `supabase` client sending every request through `http_client` (which sets the timeouts).

    The client's own retries are off: `call` decides what is retried.
    """
    try:
        return create_client(url, service_key, ClientOptions(
            httpx_client=http_client, postgrest_client_retry=False, auto_refresh_token=False,
            persist_session=False,
        ))
    except Exception as exc:
        raise StoreError(scrub(f"cannot create a Supabase client for {url!r}: {exc}", service_key)) from None


def http_client(timeout_seconds: float) -> httpx.Client:
    """The HTTP client for Supabase: `timeout_seconds` for connecting, each read and each write."""
    return httpx.Client(timeout=httpx.Timeout(timeout_seconds), follow_redirects=True)


class SupabaseProject(dg.ConfigurableResource):
    """A Supabase project reached with the service_role key: what the store and the storage share.

    The key comes from the environment (`dg.EnvVar("SUPABASE_SERVICE_KEY")`) and is never shown:
    hidden from `repr`, and scrubbed from every error.
    """

    url: str = Field(description="The project URL, https://<project-ref>.supabase.co.")
    service_key: str = Field(
        repr=False, description="The project's service_role key: set SUPABASE_SERVICE_KEY, never inline it."
    )
    timeout_seconds: float = Field(default=30.0, description="Timeout for connecting and for each read and write.")
    max_attempts: int = Field(default=4, description="Attempts per request when a failure may be retried.")
    backoff_seconds: float = Field(default=0.5, description="First pause between attempts; doubles each time.")
    _client: Optional[Client] = PrivateAttr(default=None)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = connect(self.url, self.service_key, self._http_client())
        return self._client

    def _http_client(self) -> httpx.Client:
        """The HTTP client every request goes through (tests substitute a transport here)."""
        return http_client(self.timeout_seconds)

    def _call_project(self, fn: Callable[[], T], *, operation: str, target: str, idempotent: bool) -> T:
        return call(fn, operation=operation, target=target, idempotent=idempotent,
                    policy=RetryPolicy(self.max_attempts, self.backoff_seconds),
                    timeout_seconds=self.timeout_seconds, secret=self.service_key)
