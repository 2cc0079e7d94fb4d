"""A Supabase project's HTTP APIs for tests: PostgREST and Storage answering over a real PostgreSQL.

Supabase's servers cannot run here (no PostgREST or Storage server in Debian, PyPI or npm; the
Supabase CLI needs Docker). `SupabaseEmulator` replaces them: an `httpx.MockTransport` handler
that speaks the documented request/response shapes of both APIs and runs every table request
and function call as SQL on the real embedded PostgreSQL, as PostgREST does — inside a
transaction, as the role of the request's key (`set_config('role', …)` plus
`request.jwt.claims`), so grants and row level security apply as on Supabase.

PostgREST (https://docs.postgrest.org/en/stable/references/api/): `GET`/`HEAD`/`POST`/`PATCH`/
`DELETE /rest/v1/<table>` with `select` (columns, aliases, `->`/`->>` JSON paths), filters
(`eq`, `neq`, `gt`, `gte`, `lt`, `lte`, `like`, `ilike`, `is`, `in`, `cs`, `cd`, `not.`), `or=(…)`/
`and=(…)` logic trees with quoted values, `order`, `limit`/`offset`, `columns`, `on_conflict`,
`Prefer: return=…, count=exact, resolution=…`, `Content-Range`, the single-object `Accept`,
`POST /rest/v1/rpc/<fn>` (arguments by name, sets filtered like tables), error bodies
`{"code","message","details","hint"}` with PostgREST's SQLSTATE → HTTP status table, and the
`max_rows` cap (1,000 on hosted Supabase) that truncates every result silently.

Storage (https://supabase.com/docs/reference/api, storage-api): `POST`/`PUT
/storage/v1/object/<bucket>/<path>` (multipart upload, `x-upsert`, bucket file size limit),
`GET` download (also `/object/authenticated/…`), `POST /storage/v1/object/sign/<bucket>/<path>`
and `GET` of the signed URL without credentials, `DELETE /storage/v1/object/<bucket>` (`prefixes`;
missing objects are not an error), `POST /storage/v1/object/list/<bucket>` (one folder level,
`limit`/`offset`/`sortBy`/`search`), error bodies `{"statusCode","error","message"}`.

Not emulated: JWT signatures (claims are read, not verified), embedding, GET rpc, the Auth,
Realtime and Functions APIs. `fail(...)` injects faults: HTTP errors, dropped connections,
timeouts, and responses lost after the request ran.

Use (the database needs the migrations, as the `database_url` fixture's has):

    project = SupabaseEmulator(database_url)                # max_rows=1000 as on hosted Supabase
    resources = emulated_resources(project)                 # store, artifacts, io_manager
    resources["store"].load_rows(query)                     # through supabase-py and the transport
    project.sent("GET", "/rest/v1/prediction_evaluations")  # the requests, as sent
    project.close()
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote

import httpx
import psycopg
from psycopg import sql

from reinforcement_assets.backends.supabase_storage import SupabaseArtifactStorage, SupabaseIOManager
from reinforcement_assets.backends.supabase_store import SupabaseStore

SERVICE_KEY = "test-service-role-key-0123456789abcdef"
ANON_KEY = "test-anon-key-0123456789abcdef"
URL = "http://project-ref.supabase.test"
RESERVED_PARAMS = {"select", "order", "limit", "offset", "columns", "on_conflict", "or", "and", "not.or", "not.and"}
OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "like",
             "ilike": "ilike", "match": "~", "imatch": "~*", "cs": "@>", "cd": "<@", "ov": "&&"}
SINGLE_OBJECT = "application/vnd.pgrst.object+json"

_emulators: dict[str, SupabaseEmulator] = {}


class RequestError(Exception):
    """A request PostgREST or Storage would refuse: (HTTP status, JSON body)."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body.get("message"))
        self.status, self.body = status, body


def postgrest_error(status: int, code: str, message: str, details: str | None = None, hint: str | None = None):
    return RequestError(status, {"code": code, "details": details, "hint": hint, "message": message})


def storage_error(status: int, error: str, message: str, code: str | None = None):
    return RequestError(status, {"statusCode": str(status), "error": error, "message": message,
                                 **({"code": code} if code else {})})


def http_status(sqlstate: str, role: str) -> int:
    """PostgREST's HTTP status for a PostgreSQL error code."""
    exact = {"23503": 409, "23505": 409, "25006": 405, "53400": 500, "P0001": 400, "42883": 404, "42P01": 404,
             "42P17": 500, "42501": 401 if role == "anon" else 403}
    if sqlstate in exact:
        return exact[sqlstate]
    prefixes = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500, "39": 500,
                "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
                "P0": 500, "XX": 500}
    return prefixes.get(sqlstate[:2], 400)


@dataclass
class Fault:
    """A failure to inject into the next `times` requests matching `method` and `path` (a substring)."""

    method: str | None = None
    path: str | None = None
    times: int = 1
    status: int = 503
    body: Any = None
    exception: type[httpx.TransportError] | None = None
    after_executing: bool = False  # the request runs, then its response is lost

    def matches(self, request: httpx.Request) -> bool:
        return (self.times > 0 and (self.method is None or request.method == self.method)
                and (self.path is None or self.path in unquote(request.url.path)))

    def response(self, request: httpx.Request) -> httpx.Response:
        if self.exception is not None:
            raise self.exception(f"injected {self.exception.__name__}", request=request)
        if isinstance(self.body, (dict, list)):
            return httpx.Response(self.status, json=self.body)
        return httpx.Response(self.status, text=self.body or "", headers={"Content-Type": "text/html"})


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    cache_control: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=lambda: now_iso())
    updated_at: str = field(default_factory=lambda: now_iso())


def now_iso() -> str:
    """The current time as Storage writes it (ISO 8601, milliseconds, Z)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Bucket:
    public: bool = False
    file_size_limit: int | None = 50 * 1024 * 1024
    objects: dict[str, StoredObject] = field(default_factory=dict)


class SupabaseEmulator:
    """PostgREST and Storage for one Supabase project whose database is `database_url`."""

    def __init__(self, database_url: str, *, service_key: str = SERVICE_KEY, anon_key: str = ANON_KEY,
                 max_rows: int = 1000, buckets: dict[str, Bucket] | None = None):
        self.database_url = database_url
        self.service_key, self.anon_key = service_key, anon_key
        self.max_rows = max_rows
        self.buckets = buckets if buckets is not None else {"reinforcement-artifacts": Bucket()}
        self.requests: list[httpx.Request] = []
        self.faults: list[Fault] = []
        self.key = uuid.uuid4().hex
        self._signing_key = uuid.uuid4().bytes
        self._lock = threading.RLock()
        self._conn: psycopg.Connection | None = None
        _emulators[self.key] = self

    # Plumbing.
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def http_client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(transport=self.transport(), timeout=timeout)

    def close(self) -> None:
        _emulators.pop(self.key, None)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def fail(self, **fault: Any) -> Fault:
        """Inject a `Fault` (see its fields)."""
        injected = Fault(**fault)
        self.faults.append(injected)
        return injected

    def sent(self, method: str | None = None, path: str | None = None) -> list[httpx.Request]:
        """The requests received, optionally only those with `method` and `path` in their URL path."""
        return [r for r in self.requests
                if (method is None or r.method == method) and (path is None or path in unquote(r.url.path))]

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True)
        return self._conn

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            fault = next((f for f in self.faults if f.matches(request)), None)
            if fault is not None:
                fault.times -= 1
                if fault.after_executing:
                    self._route(request)
                return fault.response(request)
            return self._route(request)

    def _route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        try:
            if path.startswith("/storage/v1/object/sign/") and request.method == "GET":
                return self._download_signed(request, path[len("/storage/v1/object/sign/"):])
            role, claims = self._authenticate(request)
            if path.startswith("/rest/v1/rpc/"):
                return self._rpc(request, path[len("/rest/v1/rpc/"):], role, claims)
            if path.startswith("/rest/v1/"):
                return self._table(request, path[len("/rest/v1/"):], role, claims)
            if path.startswith("/storage/v1/object/"):
                return self._storage(request, path[len("/storage/v1/object/"):], role)
            raise RequestError(404, {"message": "no Route matched with those values"})
        except RequestError as error:
            return httpx.Response(error.status, json=error.body)

    def _authenticate(self, request: httpx.Request) -> tuple[str, dict[str, Any]]:
        """The role and JWT claims of the request, as the API gateway and PostgREST derive them."""
        if request.headers.get("apikey") not in (self.service_key, self.anon_key):
            raise RequestError(401, {"message": "Invalid API key",
                                     "hint": "Double check your Supabase `anon` or `service_role` API key."})
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if token == self.service_key:
            return "service_role", {"role": "service_role"}
        if token in (self.anon_key, ""):
            return "anon", {"role": "anon"}
        parts = token.split(".")
        if len(parts) != 3:
            raise postgrest_error(401, "PGRST301", "Expected 3 parts in JWT; got %d" % len(parts))
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return claims.get("role", "anon"), claims

    def _run(self, role: str, claims: dict[str, Any], statements) -> Any:
        """`statements(cursor)` in one transaction as `role` with `claims`, errors answered as PostgREST does."""
        conn = self.connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("select set_config('role', %s, true), set_config('request.jwt.claims', %s, true),"
                            " set_config('timezone', 'UTC', true)", (role, json.dumps(claims)))
                return statements(cur)
        except psycopg.Error as exc:
            diag = exc.diag
            state = diag.sqlstate or "XX000"
            raise postgrest_error(http_status(state, role), state, diag.message_primary or str(exc),
                                  diag.message_detail, diag.message_hint) from None

    # PostgREST: tables.
    def _table(self, request: httpx.Request, table: str, role: str, claims: dict[str, Any]) -> httpx.Response:
        self._check_profile(request)
        if not self._table_exists(table):
            raise postgrest_error(404, "PGRST205", f"Could not find the table 'public.{table}' in the schema cache")
        target = sql.SQL("public.{}").format(sql.Identifier(table))
        params = request.url.params
        prefer = preferences(request)
        if request.method in ("GET", "HEAD"):
            return self._read(request, target, params, prefer, role, claims)
        if request.method == "POST":
            return self._insert(request, table, target, params, prefer, role, claims)
        if request.method == "PATCH":
            return self._update(request, target, params, prefer, role, claims)
        if request.method == "DELETE":
            return self._delete(request, target, params, prefer, role, claims)
        raise postgrest_error(405, "PGRST117", f"Unsupported HTTP method: {request.method}")

    def _check_profile(self, request: httpx.Request) -> None:
        for header in ("accept-profile", "content-profile"):
            schema = request.headers.get(header, "public")
            if schema != "public":
                raise postgrest_error(406, "PGRST106", f"Invalid schema: {schema}",
                                      hint="Only the following schemas are exposed: public")

    def _table_exists(self, table: str) -> bool:
        with self.connection().cursor() as cur:
            cur.execute("select to_regclass(%s) is not null", (f'public."{table}"',))
            return cur.fetchone()[0]

    def _read(self, request, source, params, prefer, role, claims) -> httpx.Response:
        query, args, count_query = self._select(source, params)

        def statements(cur):
            cur.execute(sql.SQL("select coalesce(json_agg(_r), '[]')::text, count(*) from ({}) _r").format(query),
                        args)
            body, n = cur.fetchone()
            total = None
            if prefer.get("count") == "exact":
                cur.execute(count_query, args[:-2])
                total = cur.fetchone()[0]
            return body, n, total

        body, n, total = self._run(role, claims, statements)
        offset = int(params.get("offset", 0))
        headers = {"Content-Range": content_range(offset, n, total)}
        status = 206 if total is not None and (offset > 0 or offset + n < total) else 200
        if SINGLE_OBJECT in request.headers.get("accept", ""):
            body = single_object(body, n)
            status = 200
        return json_response(status, "" if request.method == "HEAD" else body, headers)

    def _select(self, source: sql.Composable, params) -> tuple[sql.Composable, list[Any], sql.Composable]:
        """The SELECT for `params` over `source`, its arguments (limit and offset last) and its COUNT."""
        columns = select_list(params.get("select", "*"))
        where, args = where_clause(params)
        order = order_clause(params.get("order"))
        limit = min(int(params["limit"]), self.max_rows) if "limit" in params else self.max_rows
        offset = int(params.get("offset", 0))
        query = sql.SQL("select {} from {} as _src where {} {} limit %s offset %s").format(
            columns, source, where, order)
        count = sql.SQL("select count(*) from {} as _src where {}").format(source, where)
        return query, [*args, limit, offset], count

    def _insert(self, request, table, target, params, prefer, role, claims) -> httpx.Response:
        payload = json.loads(request.content or b"[]")
        rows = payload if isinstance(payload, list) else [payload]
        if "columns" in params:
            names = [c.strip().strip('"') for c in params["columns"].split(",")]
        else:
            names = list(dict.fromkeys(k for row in rows for k in row))
        columns = sql.SQL(", ").join(map(sql.Identifier, names))
        conflict = sql.SQL("")
        resolution = prefer.get("resolution")
        if resolution:
            keys = params.get("on_conflict")
            key_columns = keys.split(",") if keys else self._primary_key(table)
            updates = sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(n)) for n in names)
            action = (sql.SQL("do nothing") if resolution == "ignore-duplicates"
                      else sql.SQL("do update set {}").format(updates))
            conflict = sql.SQL("on conflict ({}) {}").format(
                sql.SQL(", ").join(map(sql.Identifier, key_columns)), action)
        statement = sql.SQL(
            "with pgrst_source as (insert into {target} ({columns}) select {columns}"
            " from json_populate_recordset(null::{target}, %s::json) {conflict} returning *)"
            " select coalesce(json_agg(_r), '[]')::text, count(*) from (select {selected} from pgrst_source as _src) _r"
        ).format(target=target, columns=columns, conflict=conflict, selected=select_list(params.get("select", "*")))
        return self._mutation(statement, [json.dumps(rows)], 201, prefer, role, claims, request)

    def _update(self, request, target, params, prefer, role, claims) -> httpx.Response:
        payload = json.loads(request.content or b"{}")
        columns = sql.SQL(", ").join(map(sql.Identifier, payload))
        where, args = where_clause(params)
        statement = sql.SQL(
            "with pgrst_source as (update {target} as _src set ({columns}) = (select {columns}"
            " from json_populate_record(null::{target}, %s::json)) where {where} returning _src.*)"
            " select coalesce(json_agg(_r), '[]')::text, count(*) from (select {selected} from pgrst_source as _src) _r"
        ).format(target=target, columns=columns, where=where, selected=select_list(params.get("select", "*")))
        return self._mutation(statement, [json.dumps(payload), *args], 200, prefer, role, claims, request)

    def _delete(self, request, target, params, prefer, role, claims) -> httpx.Response:
        where, args = where_clause(params)
        statement = sql.SQL(
            "with pgrst_source as (delete from {target} as _src where {where} returning _src.*)"
            " select coalesce(json_agg(_r), '[]')::text, count(*) from (select {selected} from pgrst_source as _src) _r"
        ).format(target=target, where=where, selected=select_list(params.get("select", "*")))
        return self._mutation(statement, args, 200, prefer, role, claims, request)

    def _mutation(self, statement, args, status, prefer, role, claims, request) -> httpx.Response:
        def statements(cur):
            cur.execute(statement, args)
            return cur.fetchone()

        body, n = self._run(role, claims, statements)
        headers = {"Content-Range": f"*/{n if prefer.get('count') == 'exact' else '*'}",
                   "Preference-Applied": ", ".join(f"{k}={v}" for k, v in prefer.items()
                                                   if k in ("return", "resolution", "missing"))}
        if prefer.get("return") != "representation":
            return httpx.Response(status if status == 201 else 204, headers=headers)
        if SINGLE_OBJECT in request.headers.get("accept", ""):
            body = single_object(body, n)
        return json_response(status, body, headers)

    def _primary_key(self, table: str) -> list[str]:
        with self.connection().cursor() as cur:
            cur.execute("select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid"
                        " and a.attnum = any(i.indkey) where i.indrelid = %s::regclass and i.indisprimary",
                        (f'public."{table}"',))
            return [name for (name,) in cur.fetchall()]

    # PostgREST: functions.
    def _function(self, name: str, arguments: set[str]) -> dict[str, Any]:
        """The overload of public.`name` callable with exactly these named arguments, as PostgREST picks it."""
        with self.connection().cursor() as cur:
            cur.execute(
                """
                select p.proretset, t.typtype, p.prorettype = 'void'::regtype, p.proargnames, p.proargmodes,
                       array(select format_type(u.oid, null) from unnest(coalesce(p.proallargtypes,
                             p.proargtypes::oid[])) with ordinality as u(oid, i) order by u.i),
                       p.pronargdefaults, p.pronargs
                  from pg_proc p join pg_type t on t.oid = p.prorettype
                 where p.pronamespace = 'public'::regnamespace and p.proname = %s
                """, (name,))
            overloads = []
            for retset, typtype, void, names, modes, types, defaults, nargs in cur.fetchall():
                modes = modes or ["i"] * len(types)
                inputs = [(n, t) for n, m, t in zip(names or [], modes, types) if m in ("i", "b", "v")]
                overloads.append({"set": retset, "composite": typtype == "c", "void": void, "inputs": inputs,
                                  "required": {n for n, _ in inputs[:nargs - defaults]}})
        for overload in overloads:
            names = {n for n, _ in overload["inputs"]}
            if arguments <= names and overload["required"] <= arguments:
                return overload
        raise postgrest_error(
            404, "PGRST202", f"Could not find the function public.{name}({', '.join(sorted(arguments))}) in the "
            "schema cache", hint="If a new function was created in the database with this name and parameters, "
            "try reloading the schema cache.")

    def _rpc(self, request: httpx.Request, name: str, role: str, claims: dict[str, Any]) -> httpx.Response:
        self._check_profile(request)
        if request.method != "POST":
            raise postgrest_error(405, "PGRST101", "Only POST is emulated for functions")
        arguments = json.loads(request.content or b"{}")
        function = self._function(name, set(arguments))
        given = [(n, t) for n, t in function["inputs"] if n in arguments]
        record = sql.SQL("json_to_record(%s::json) as _args({})").format(sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in given) if given else sql.SQL("_ int"))
        call = sql.SQL("public.{}({})").format(sql.Identifier(name), sql.SQL(", ").join(
            sql.SQL("{0} => _args.{0}").format(sql.Identifier(n)) for n, _ in given))
        args = [json.dumps(arguments)]
        if function["set"]:
            source = sql.SQL("(select _f.* from {}, lateral {} as _f)").format(record, call)
            return self._read(request, source, RpcParams(request.url.params, args), preferences(request), role,
                              claims)
        if function["composite"]:
            query = sql.SQL("select to_json(_f)::text from {}, lateral {} as _f").format(record, call)
        else:
            query = sql.SQL("select to_json({})::text from {}").format(call, record)

        def statements(cur):
            cur.execute(query, args)
            return cur.fetchone()[0]

        body = self._run(role, claims, statements)
        if function["void"]:
            return httpx.Response(204)
        return json_response(200, body, {"Content-Range": "0-0/*"})

    # Storage.
    def _storage(self, request: httpx.Request, rest: str, role: str) -> httpx.Response:
        if role != "service_role":
            # The bucket is private and storage.objects has no policies: only service_role passes.
            raise storage_error(403, "Unauthorized", "new row violates row-level security policy", "AccessDenied")
        if rest.startswith("sign/") and request.method == "POST":
            return self._sign(request, rest[len("sign/"):])
        if rest.startswith("list/") and request.method == "POST":
            return self._list(request, unquote(rest[len("list/"):]))
        if rest.startswith("authenticated/"):
            rest = rest[len("authenticated/"):]
        bucket_name, _, key = unquote(rest).partition("/")
        bucket = self.buckets.get(bucket_name)
        if bucket is None:
            raise storage_error(404, "Bucket not found", "Bucket not found", "NoSuchBucket")
        if request.method in ("POST", "PUT"):
            return self._upload(request, bucket_name, bucket, key)
        if request.method == "GET":
            return self._object_response(bucket, key)
        if request.method == "DELETE" and not key:
            removed = [name for name in json.loads(request.content)["prefixes"] if bucket.objects.pop(name, None)]
            return httpx.Response(200, json=[{"name": name, "bucket_id": bucket_name} for name in removed])
        raise storage_error(405, "invalid_method", f"{request.method} is not supported")

    def _upload(self, request: httpx.Request, bucket_name: str, bucket: Bucket, key: str) -> httpx.Response:
        parts = multipart_parts(request)
        if "file" not in parts:
            raise storage_error(400, "invalid_request", "No file in the upload", "InvalidRequest")
        data, content_type = parts["file"]
        upsert = request.headers.get("x-upsert", "false")
        if upsert not in ("true", "false"):
            raise storage_error(400, "invalid_request", f"x-upsert must be true or false, not {upsert!r}")
        exists = key in bucket.objects
        if request.method == "POST" and exists and upsert != "true":
            raise storage_error(409, "Duplicate", "The resource already exists", "KeyAlreadyExists")
        if request.method == "PUT" and not exists:
            raise storage_error(404, "not_found", "Object not found", "NoSuchKey")
        if bucket.file_size_limit is not None and len(data) > bucket.file_size_limit:
            raise storage_error(413, "Payload too large", "The object exceeded the maximum allowed size",
                                "EntityTooLarge")
        cache_control = parts.get("cacheControl", (b"3600", ""))[0].decode()
        stored = StoredObject(data, content_type or "application/octet-stream", cache_control)
        if exists:  # an overwrite keeps the object's id and creation time
            stored.id, stored.created_at = bucket.objects[key].id, bucket.objects[key].created_at
        bucket.objects[key] = stored
        return httpx.Response(200, json={"Key": f"{bucket_name}/{key}", "Id": stored.id})

    def _list(self, request: httpx.Request, bucket_name: str) -> httpx.Response:
        """`POST /object/list/<bucket>`: one level of the folder `prefix` (`a` and `a/` alike), folders as
        entries whose id and metadata are null, sorted, filtered by `search` (a name prefix), paged."""
        bucket = self.buckets.get(bucket_name)
        if bucket is None:
            raise storage_error(404, "Bucket not found", "Bucket not found", "NoSuchBucket")
        body = json.loads(request.content or b"{}")
        prefix = body.get("prefix") or ""
        prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        entries: dict[str, dict[str, Any]] = {}
        for key, stored in bucket.objects.items():
            if not key.startswith(prefix):
                continue
            name, slash, _ = key[len(prefix):].partition("/")
            if slash:
                entries.setdefault(name, {"name": name, "id": None, "updated_at": None, "created_at": None,
                                          "last_accessed_at": None, "metadata": None})
            else:
                entries[name] = {"name": name, "id": stored.id, "updated_at": stored.updated_at,
                                 "created_at": stored.created_at, "last_accessed_at": stored.updated_at,
                                 "metadata": {"eTag": f'"{hashlib.md5(stored.data).hexdigest()}"',
                                              "size": len(stored.data), "mimetype": stored.content_type,
                                              "cacheControl": f"max-age={stored.cache_control}",
                                              "lastModified": stored.updated_at, "contentLength": len(stored.data),
                                              "httpStatusCode": 200}}
        search = body.get("search") or ""
        sort = body.get("sortBy") or {}
        column = sort.get("column", "name")
        listed = sorted((e for e in entries.values() if e["name"].startswith(search)),
                        key=lambda e: (e[column] or "", e["name"]), reverse=sort.get("order") == "desc")
        offset, limit = int(body.get("offset", 0)), int(body.get("limit", 100))
        return httpx.Response(200, json=listed[offset:offset + limit])

    def _object_response(self, bucket: Bucket, key: str) -> httpx.Response:
        stored = bucket.objects.get(key)
        if stored is None:
            raise storage_error(404, "not_found", "Object not found", "NoSuchKey")
        return httpx.Response(200, content=stored.data, headers={
            "Content-Type": stored.content_type, "Cache-Control": f"max-age={stored.cache_control}"})

    def _token(self, path: str, expires_at: int) -> str:
        claims = base64.urlsafe_b64encode(json.dumps({"url": path, "exp": expires_at}).encode()).decode()
        signature = hmac.new(self._signing_key, claims.encode(), hashlib.sha256).hexdigest()
        return f"{claims}.{signature}"

    def _sign(self, request: httpx.Request, rest: str) -> httpx.Response:
        path = unquote(rest)
        bucket_name, _, key = path.partition("/")
        bucket = self.buckets.get(bucket_name)
        if bucket is None or key not in bucket.objects:
            raise storage_error(404, "not_found", "Object not found", "NoSuchKey")
        expires_in = int(json.loads(request.content)["expiresIn"])
        token = self._token(path, int(time.time()) + expires_in)
        return httpx.Response(200, json={"signedURL": f"/object/sign/{rest}?token={token}"})

    def _download_signed(self, request: httpx.Request, rest: str) -> httpx.Response:
        path = unquote(rest)
        token = request.url.params.get("token", "")
        claims, _, signature = token.rpartition(".")
        expected = hmac.new(self._signing_key, claims.encode(), hashlib.sha256).hexdigest()
        if not claims or not hmac.compare_digest(signature, expected):
            raise storage_error(400, "InvalidJWT", "invalid signature", "InvalidSignature")
        payload = json.loads(base64.urlsafe_b64decode(claims))
        if payload["url"] != path:
            raise storage_error(400, "InvalidSignature", "The url do not match the signature", "InvalidSignature")
        if payload["exp"] < time.time():
            raise storage_error(400, "InvalidJWT", "jwt expired", "ExpiredToken")
        bucket_name, _, key = path.partition("/")
        return self._object_response(self.buckets[bucket_name], key)


class RpcParams:
    """Query parameters of an rpc call with the function's argument JSON prepended to the SQL arguments."""

    def __init__(self, params, leading: list[Any]):
        self.params, self.leading = params, leading

    def __contains__(self, key):
        return key in self.params

    def __getitem__(self, key):
        return self.params[key]

    def get(self, key, default=None):
        return self.params.get(key, default)

    def multi_items(self):
        return self.params.multi_items()


# Parsing PostgREST's query syntax into SQL.
def preferences(request: httpx.Request) -> dict[str, str]:
    prefer = {}
    for item in request.headers.get_list("prefer", split_commas=True):
        key, _, value = item.strip().partition("=")
        prefer[key] = value
    return prefer


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """`text` split at `separator` outside parentheses and double quotes."""
    parts, depth, quoted, escaped, current = [], 0, False, False, []
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == separator:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p != ""]


def unquote_value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def column_expression(text: str) -> tuple[sql.Composable, str]:
    """A column or JSON path (`features->>x0`, with an optional `::type` cast) and its default output name."""
    text, _, cast = text.partition("::")
    pieces = re.split(r"(->>|->)", text.strip())
    expression: sql.Composable = sql.SQL("_src.{}").format(sql.Identifier(pieces[0]))
    name = pieces[0]
    for arrow, key in zip(pieces[1::2], pieces[2::2]):
        key = unquote_value(key)
        operand = sql.Literal(int(key)) if re.fullmatch(r"-?\d+", key) else sql.Literal(key)
        expression = sql.SQL("({} {} {})").format(expression, sql.SQL(arrow), operand)
        name = key
    if cast:
        if not re.fullmatch(r"[a-z0-9_ \[\]]+", cast):
            raise postgrest_error(400, "PGRST100", f"invalid cast {cast!r}")
        expression = sql.SQL("{}::{}").format(expression, sql.SQL(cast))
    return expression, name


def select_list(select: str) -> sql.Composable:
    items = []
    for item in split_top_level(select):
        if item.strip() == "*":
            items.append(sql.SQL("_src.*"))
            continue
        alias, _, column = item.partition(":") if re.match(r"^\w+:[^:]", item) else ("", "", item)
        expression, name = column_expression(column)
        items.append(sql.SQL("{} as {}").format(expression, sql.Identifier(alias or name)))
    return sql.SQL(", ").join(items)


def condition(column: str, operation: str, in_tree: bool = False) -> tuple[sql.Composable, list[Any]]:
    """SQL for one PostgREST filter `column=operation` (`[not.]op.value`); in logic trees values may be quoted."""
    negate = operation.startswith("not.")
    if negate:
        operation = operation[4:]
    op, _, value = operation.partition(".")
    expression, _ = column_expression(column)
    if op == "is":
        keyword = {"null": "null", "true": "true", "false": "false", "unknown": "unknown"}.get(value.lower())
        if keyword is None:
            raise postgrest_error(400, "PGRST100", f'failed to parse filter ({operation})')
        clause, args = sql.SQL("{} is {}").format(expression, sql.SQL(keyword)), []
    elif op == "in":
        values = [unquote_value(v) for v in split_top_level(value.strip()[1:-1])]
        clause = (sql.SQL("{} in ({})").format(expression, sql.SQL(", ").join(sql.Placeholder() for _ in values))
                  if values else sql.SQL("false"))
        args = values
    elif op in OPERATORS:
        operand = unquote_value(value) if in_tree else value
        if op in ("like", "ilike"):
            operand = operand.replace("*", "%")
        clause, args = sql.SQL("{} {} %s").format(expression, sql.SQL(OPERATORS[op])), [operand]
    else:
        raise postgrest_error(400, "PGRST100", f'failed to parse filter ({operation})',
                              details=f'unexpected "{op}" expecting an operator')
    return (sql.SQL("not ({})").format(clause) if negate else clause), args


def logic_tree(kind: str, body: str) -> tuple[sql.Composable, list[Any]]:
    """SQL for `or=(...)` / `and=(...)` (possibly nested, possibly negated)."""
    negate = kind.startswith("not.")
    kind = kind.removeprefix("not.")
    if not (body.startswith("(") and body.endswith(")")):
        raise postgrest_error(400, "PGRST100", f"failed to parse logic tree ({body})")
    clauses, args = [], []
    for term in split_top_level(body[1:-1]):
        nested = re.match(r"^(not\.)?(and|or)(\(.*\))$", term)
        if nested:
            clause, term_args = logic_tree((nested.group(1) or "") + nested.group(2), nested.group(3))
        else:
            column, _, operation = term.partition(".")
            clause, term_args = condition(column, operation, in_tree=True)
        clauses.append(clause)
        args.extend(term_args)
    joined = sql.SQL(f" {kind} ").join(sql.SQL("({})").format(c) for c in clauses)
    return (sql.SQL("not ({})").format(joined) if negate else sql.SQL("({})").format(joined)), args


def where_clause(params) -> tuple[sql.Composable, list[Any]]:
    clauses: list[sql.Composable] = [sql.SQL("true")]
    args: list[Any] = list(getattr(params, "leading", []))
    for key, value in params.multi_items():
        if key in ("or", "and", "not.or", "not.and"):
            clause, clause_args = logic_tree(key, value)
        elif key in RESERVED_PARAMS:
            continue
        else:
            clause, clause_args = condition(key, value)
        clauses.append(clause)
        args.extend(clause_args)
    return sql.SQL(" and ").join(clauses), args


def order_clause(order: str | None) -> sql.Composable:
    if not order:
        return sql.SQL("")
    terms = []
    for term in split_top_level(order):
        column, *modifiers = term.split(".")
        expression, _ = column_expression(column)
        direction = "desc" if "desc" in modifiers else "asc"
        nulls = " nulls first" if "nullsfirst" in modifiers else " nulls last" if "nullslast" in modifiers else ""
        terms.append(sql.SQL("{} {}{}").format(expression, sql.SQL(direction), sql.SQL(nulls)))
    return sql.SQL("order by {}").format(sql.SQL(", ").join(terms))


def content_range(offset: int, n: int, total: int | None) -> str:
    shown = "*" if total is None else str(total)
    return f"{offset}-{offset + n - 1}/{shown}" if n else f"*/{shown}"


def single_object(body: str, n: int) -> str:
    if n != 1:
        raise postgrest_error(406, "PGRST116", "Cannot coerce the result to a single JSON object",
                              details=f"The result contains {n} rows")
    return json.dumps(json.loads(body)[0])


def json_response(status: int, body: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(status, content=body.encode(), headers={
        "Content-Type": "application/json; charset=utf-8", **headers})


def multipart_parts(request: httpx.Request) -> dict[str, tuple[bytes, str]]:
    """The parts of a multipart/form-data body: name -> (bytes, content type), byte for byte."""
    content_type = request.headers.get("content-type", "")
    match = re.search(r"boundary=([^;]+)", content_type)
    if not content_type.startswith("multipart/form-data") or not match:
        raise storage_error(400, "invalid_request", "expected a multipart/form-data upload", "InvalidRequest")
    delimiter = b"--" + match.group(1).strip('"').encode()
    parts = {}
    for chunk in request.content.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk[2:].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line)
        name = re.search(r'name="([^"]*)"', headers.get("Content-Disposition", "")).group(1)
        parts[name] = (data[:-2], headers.get("Content-Type", ""))
    return parts


# Resources whose requests go to an emulator: they find it again by key after Dagster re-creates them.
def emulator(key: str) -> SupabaseEmulator:
    return _emulators[key]


class EmulatedSupabaseStore(SupabaseStore):
    """`SupabaseStore` talking to the `SupabaseEmulator` registered under `emulator`, not to the network."""

    emulator: str

    def _http_client(self) -> httpx.Client:
        return emulator(self.emulator).http_client(self.timeout_seconds)


class EmulatedSupabaseArtifactStorage(SupabaseArtifactStorage):
    """`SupabaseArtifactStorage` talking to the `SupabaseEmulator` registered under `emulator`."""

    emulator: str

    def _http_client(self) -> httpx.Client:
        return emulator(self.emulator).http_client(self.timeout_seconds)


def emulated_resources(project: SupabaseEmulator, store: dict[str, Any] | None = None,
                       artifacts: dict[str, Any] | None = None) -> dict[str, Any]:
    """The loop's resources on the Supabase backend, served by `project` (fast backoff for tests)."""
    common = {"url": URL, "service_key": project.service_key, "emulator": project.key, "backoff_seconds": 0.01}
    store = EmulatedSupabaseStore(**{**common, **(store or {})})
    artifacts = EmulatedSupabaseArtifactStorage(**{**common, **(artifacts or {})})
    return {"store": store, "artifacts": artifacts, "io_manager": SupabaseIOManager(storage=artifacts)}
