"""The Monitoring page and its JSON API, a Starlette app over the configured store.

Every read and write goes through the store (and the artifact storage for training logs and
rollbacks), so the page works the same on the embedded default, any PostgreSQL, or Supabase. Writes
are the CLI's own: a request is queued as `reinforcement request` queues it, a rollback is
`rollback.roll_back`'s compare-and-swap.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..backends.artifacts import ArtifactStorage
from ..backends.store import Store
from ..core.records import REQUEST_PRIORITIES, StoreError
from ..defs.request_queue import InvalidRequest, check_reason
from ..rollback import RollbackRefused, roll_back
from .dashboard import dashboard, live
from .security import SESSION_COOKIE, Access, AccessMiddleware
from .views import as_json, request_view, run_view, version_view

MAX_BODY_BYTES = 16_384
LOG_BYTES_SHOWN = 200_000


@dataclass(frozen=True)
class MonitorSettings:
    refresh_seconds: float = 30.0  # the page reloads all its data this often
    poll_seconds: float = 2.0  # and checks this often whether a run or request changed
    lookback_days: float = 7.0
    requested_by: str | None = None  # the user id new requests carry


class BadInput(ValueError):
    """A request body the API cannot take; answered 400 (413 when too large) and nothing is written."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read up to `MAX_BODY_BYTES` (a form post is accepted too)."""
    declared = request.headers.get("content-length")
    if declared and whole(declared) and int(declared) > MAX_BODY_BYTES:
        raise BadInput(f"the body is larger than {MAX_BODY_BYTES:,} bytes", 413)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BadInput(f"the body is larger than {MAX_BODY_BYTES:,} bytes", 413)
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items()}
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested too deep (16 KB of brackets)
        raise BadInput("the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadInput("the body must be a JSON object")
    return data


def whole(text: str) -> bool:
    """Whether `text` is ASCII digits only (`str.isdigit` also takes "²", which `int` refuses)."""
    return text.isascii() and text.isdigit()


def flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "on", "1", "false", "off", "0", ""):
        return value.lower() in ("true", "on", "1")
    raise BadInput(f"{name} must be true or false, got {value!r:.50}")


def error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def create_app(store: Store, artifacts: ArtifactStorage, access: Access,
               settings: MonitorSettings = MonitorSettings()) -> Starlette:
    """The page (`/`, `/runs/{id}`), its fragments for live refresh (`/partials/*`) and the JSON API (`/api/*`)."""
    templates = Environment(loader=PackageLoader("reinforcement_assets.monitor", "templates"),
                            autoescape=select_autoescape(["html"]))
    templates.filters["pct"] = lambda v: "n/a" if v is None else f"{v:.1%}"
    templates.filters["num"] = lambda v, d=3: "n/a" if v is None else f"{v:.{d}f}"
    templates.filters["when"] = lambda v: "" if v is None else f"{v:%Y-%m-%d %H:%M:%S} UTC"
    templates.filters["seconds"] = lambda v: "" if v is None else (f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min")
    templates.filters["pvalue"] = lambda v: "n/a" if v is None else f"{v:.3g}"

    def page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = templates.get_template(name).render(settings=settings, priorities=REQUEST_PRIORITIES,
                                                   token_required=access.token is not None, **values)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    async def index(request: Request) -> Response:
        return page("index.html", board=await run_in_threadpool(dashboard, store, settings.lookback_days))

    async def dashboard_partial(request: Request) -> Response:
        return page("_dashboard.html", board=await run_in_threadpool(dashboard, store, settings.lookback_days))

    def get_run(run_id: str) -> dict[str, Any] | None:
        """The run's row; None for an id no row can have (PostgreSQL text holds no NUL), not a 503."""
        return None if "\x00" in run_id else store.get_run(run_id)

    async def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        row = await run_in_threadpool(get_run, run_id)
        if row is None:
            return page("missing.html", 404, what=f"run {run_id}")
        log, log_link = await run_in_threadpool(training_log, run_id)
        return page("run.html", run=run_view(row), log=log, log_link=log_link)

    def training_log(run_id: str) -> tuple[str | None, str | None]:
        """The run's training log (its last part), and a link to the whole file (signed on Supabase)."""
        path = f"logs/{run_id}.log"
        try:
            text = artifacts.read_text(path, LOG_BYTES_SHOWN)
        except (OSError, ValueError, StoreError):  # ValueError: a run id no file name can hold
            return None, None
        try:
            link = artifacts.uri(path)
        except (OSError, StoreError):
            link = None
        return text, (f"/runs/{run_id}/log" if link is None or link.startswith("file:") else link)

    async def run_log(request: Request) -> Response:
        text, _ = await run_in_threadpool(training_log, request.path_params["run_id"])
        if text is None:
            return PlainTextResponse("no training log for this run", status_code=404)
        return PlainTextResponse(text)

    async def api_status(request: Request) -> Response:
        now = await run_in_threadpool(live, store)
        latest = now.runs[0] if now.runs else None
        return JSONResponse(as_json({
            "latest_run": latest, "champion": now.champion,
            "pending_requests": [r for r in now.requests if r.status == "pending"],
            "fingerprint": now.fingerprint,
        }))

    async def api_changes(request: Request) -> Response:
        now = await run_in_threadpool(live, store)
        return JSONResponse({"fingerprint": now.fingerprint})

    async def api_runs(request: Request) -> Response:
        limit = request.query_params.get("limit", "20")
        if not whole(limit) or not 1 <= int(limit) <= 500:
            return error("limit must be a whole number from 1 to 500")
        rows = await run_in_threadpool(store.latest_runs, int(limit))
        return JSONResponse(as_json([run_view(r) for r in rows]))

    async def api_run(request: Request) -> Response:
        row = await run_in_threadpool(get_run, request.path_params["run_id"])
        return error("unknown run", 404) if row is None else JSONResponse(as_json(run_view(row)))

    async def api_requests(request: Request) -> Response:
        if request.method != "POST":  # GET or HEAD: HEAD is no write, and skips the Origin check
            found = await run_in_threadpool(store.latest_requests, 20)
            return JSONResponse(as_json([request_view(r) for r in found]))
        try:
            data = await json_body(request)
            unknown = sorted(set(data) - {"reason", "priority", "from_scratch"})
            if unknown:
                raise BadInput(f"unknown field(s) {', '.join(unknown)}; allowed: reason, priority, from_scratch")
            reason = check_reason(data.get("reason"))
            options = {"from_scratch": flag(data, "from_scratch")}
            queued = await run_in_threadpool(lambda: store.create_request(
                reason, priority=data.get("priority", "normal"), options=options,
                requested_by=settings.requested_by))
        except BadInput as exc:
            return error(str(exc), exc.status)
        except (InvalidRequest, StoreError) as exc:
            return error(str(exc))
        return JSONResponse(as_json(request_view(queued)), status_code=201)

    async def api_request(request: Request) -> Response:
        try:
            found = await run_in_threadpool(store.get_request, request.path_params["request_id"])
        except StoreError:
            found = None
        return error("unknown request", 404) if found is None else JSONResponse(as_json(request_view(found)))

    async def api_cancel(request: Request) -> Response:
        try:
            cancelled = await run_in_threadpool(store.cancel_request, request.path_params["request_id"])
        except StoreError as exc:
            return error(str(exc), 409)
        return JSONResponse(as_json(request_view(cancelled)))

    async def api_rollback(request: Request) -> Response:
        try:
            data = await json_body(request)
            version = data.get("version")
            if not isinstance(version, str) or not version.strip():
                raise BadInput("name the version to roll back to")
            reason = data.get("reason")
            if not isinstance(reason, str):
                raise BadInput("a rollback needs a reason")
            done = await run_in_threadpool(lambda: roll_back(store, artifacts, version.strip(), reason,
                                                             force=flag(data, "force")))
        except BadInput as exc:
            return error(str(exc), exc.status)
        except RollbackRefused as exc:
            return error(str(exc).replace("add --force", "confirm with force"), 404 if exc.not_found else 409)
        except StoreError as exc:
            return error(str(exc), 409)
        champion = await run_in_threadpool(store.champion)
        return JSONResponse({"version": done.version, "previous": done.previous,
                             "champion": as_json(version_view(champion)) if champion else None})

    async def login(request: Request) -> Response:
        if access.token is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return page("login.html")
        try:
            data = await json_body(request)
        except BadInput as exc:
            return error(str(exc), exc.status)
        given = str(data.get("token", "")).strip()
        if not hmac.compare_digest(given.encode(), access.token.encode()):
            return page("login.html", 401, failed=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, access.session_value(), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def problem(request: Request, exc: Exception) -> Response:
        message = " ".join(str(exc).split()) or type(exc).__name__
        if request.url.path.startswith("/api/"):
            return error(f"the store could not answer: {message}", 503)
        return page("missing.html", 503, what=f"the store could not answer: {message}")

    routes = [
        Route("/", index),
        Route("/partials/dashboard", dashboard_partial),
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/log", run_log),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/api/status", api_status),
        Route("/api/changes", api_changes),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run_id}", api_run),
        Route("/api/requests", api_requests, methods=["GET", "POST"]),
        Route("/api/requests/{request_id}", api_request),
        Route("/api/requests/{request_id}/cancel", api_cancel, methods=["POST"]),
        Route("/api/rollback", api_rollback, methods=["POST"]),
        Mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(AccessMiddleware, access=access)],
                     exception_handlers={StoreError: problem})
