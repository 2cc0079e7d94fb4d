"""The `reinforcement` command: run the demo, register a model, queue retraining requests, show status, roll back,
prune old artifacts, serve the Monitoring page."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

DEFAULT_DATA_DIR = ".reinforcement"
# Commands that make a new data folder on purpose; the others refuse one with no database in it
# (a mistyped --data-dir would otherwise start an empty embedded database).
CREATES_DATA_DIR = frozenset({"demo", "migrate", "register", "dev"})

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = fn
        return fn
    return register


def _definitions():
    """The code location's Definitions (imported late: --data-dir must reach the environment first)."""
    from .definitions import defs
    return defs


def _instance():
    """The Dagster instance `reinforcement dev` shows: DAGSTER_HOME (see `use_data_dir`)."""
    import dagster as dg
    return dg.DagsterInstance.get()


def use_data_dir(data_dir: str | None, *, prepare: bool = True) -> Path:
    """Point this process (and those it starts) at one data folder and its Dagster instance.

    REINFORCEMENT_DATA_DIR becomes absolute, so a code server started elsewhere finds the same
    folder; DAGSTER_HOME defaults to `<data folder>/dagster_home`, so runs of the CLI, the UI and
    the sensors share one instance. `prepare`: create that instance now (`prepare_dagster_home`).
    """
    folder = Path(data_dir or os.environ.get("REINFORCEMENT_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()
    os.environ["REINFORCEMENT_DATA_DIR"] = str(folder)
    home = Path(os.environ.get("DAGSTER_HOME") or folder / "dagster_home").expanduser().resolve()
    os.environ["DAGSTER_HOME"] = str(home)  # Dagster wants it absolute
    if prepare:
        prepare_dagster_home(folder)
    return folder


def prepare_dagster_home(folder: Path) -> None:
    """Create DAGSTER_HOME; the data folder's own gets its `dagster.yaml` (the run queue's one-cycle
    limit and run monitoring) unless it has one. A DAGSTER_HOME you set is yours to configure."""
    from .defs.instance import ensure_local_instance

    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if home == folder / "dagster_home":
        ensure_local_instance(home)


def missing_database(command_name: str, folder: Path) -> str | None:
    """Why `command_name` may not run on `folder` (None if it may): the embedded backend's data folder
    must hold a database unless the command creates one."""
    from .backends.embedded import pgdata_of
    from .defs.resources import backend_from_environment

    if command_name in CREATES_DATA_DIR or backend_from_environment(os.environ) != "embedded":
        return None
    if pgdata_of(folder).exists():
        return None
    return (f"no database in {folder} (no {pgdata_of(folder).name}/ folder): check --data-dir or "
            "REINFORCEMENT_DATA_DIR; `reinforcement demo` or `reinforcement migrate` creates one")


@contextmanager
def environment_resources(*keys: str) -> Iterator[tuple]:
    """The resources the environment selects (`dg.EnvVar`s resolved), without loading the code location."""
    import dagster as dg

    from .defs.resources import default_resources

    selected = default_resources()
    with dg.build_resources({key: selected[key] for key in keys}) as resources:
        yield tuple(getattr(resources, key) for key in keys)


def run_retraining(tags: dict[str, str], window_end: pd.Timestamp | None = None, **asset_config):
    """Execute the retraining job in this process with the environment's resources."""
    import dagster as dg

    from . import settings

    config = {"evaluation_log": {"config": {"window_end": window_end.isoformat()}}} if window_end is not None else {}
    for asset, values in asset_config.items():
        config.setdefault(asset, {"config": {}})["config"].update(values)
    job = _definitions().resolve_job_def("retraining_job")
    instance = _instance()
    for line in bypass_notes(instance):
        print(line, file=sys.stderr)
    return job.execute_in_process(
        instance=instance, tags=tags, raise_on_error=False,
        run_config=dg.RunConfig(config, loggers={"console": {"config": {"log_level": settings.LOG_LEVEL}}}),
    )


def bypass_notes(instance) -> list[str]:
    """What the CLI says before its in-process cycle: it skips the run queue, past any cycle in progress."""
    from .defs.sensors import cycles_in_progress

    busy = instance.get_runs(filters=cycles_in_progress())
    return [f"note: retraining run {run.run_id} is {run.status.value}; this cycle runs in this process, outside "
            f"Dagster's run queue, so the one-cycle-at-a-time limit does not hold it back (queued runs wait for it)"
            for run in busy]


@command("demo")
def demo(args: argparse.Namespace) -> int:
    """Fill the store with a drifting week of predictions, run the loop once, report."""
    with environment_resources("store", "artifacts") as (store, artifacts):
        return run_demo(args, store, artifacts)


def run_demo(args: argparse.Namespace, store, artifacts) -> int:
    """The demo on the given store and artifact storage; returns the exit status."""
    from .demo import accuracy, deploy_initial_model, drift_scenario, log_traffic

    scenario = drift_scenario(args.rows, seed=args.seed)
    end = pd.Timestamp.now(tz="UTC").floor("min")
    print(f"store: {store.describe()}")

    champion = store.champion()
    if champion is None:
        deployed = deploy_initial_model(store, artifacts, scenario, version=f"demo-v0-{end:%Y%m%d%H%M}")
        version = store.champion().version
        print(f"deployed the initial model {version} (trained before the drift)")
    else:
        deployed = artifacts.read_value(champion.artifact_path, champion.sha256)
        version = champion.version
        print(f"the champion is {version}")

    log, broken = log_traffic(deployed, *scenario.window, end - pd.Timedelta(days=args.lookback_days), end,
                              model_version=version, bad_row_share=0.02, seed=args.seed,
                              prefix=f"demo-{end:%Y%m%d%H%M}")
    inserted = store.insert_evaluations(log)
    print(f"logged {inserted:,} predictions over {args.lookback_days:g} days, concept drift at 40% of the window, "
          f"{int(broken.notna().sum())} broken rows")

    result = run_retraining({"source": "manual"}, window_end=end,
                            evaluation_log={"lookback_days": args.lookback_days})
    run = store.get_run(result.run_id) or {}
    print()
    print(report(result, run))
    champion = store.champion()
    model = artifacts.read_value(champion.artifact_path, champion.sha256)
    print()
    print(f"accuracy on the day after the window: deployed model {accuracy(deployed, *scenario.after):.3f}, "
          f"champion now ({champion.version}) {accuracy(model, *scenario.after):.3f}")
    return 0 if result.success and run.get("status") in ("completed", "skipped") else 1


def report(result, run: dict) -> str:
    """What a retraining run did, from its materialisations and its row in model_retraining_runs."""
    meta = {
        event.materialization.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }
    metrics = run.get("metrics") or {}
    lines = [f"run {result.run_id}: {run.get('status', 'not recorded')}"]
    if "evaluation_log" in meta:
        m = meta["evaluation_log"]
        lines.append(f"  rows loaded        {m['rows']:,} (accuracy {m['accuracy']:.3f}), set aside {m['rows_rejected']:,}"
                     f" {m['rejected_by_reason']}")
    if "error_samples" in meta:
        m = meta["error_samples"]
        lines.append(f"  errors found       {m['count']:,} with confidence > {m['confidence_threshold']:g}"
                     f" {m['per_class']}")
    if "finetune_dataset" in meta:
        m = meta["finetune_dataset"]
        lines.append(f"  dataset            {m['train_rows']:,} training rows ({m['error_rows']:,} errors, "
                     f"{m['replay_rows']:,} replayed, {m['window_sample_rows']:,} sampled), "
                     f"{m['holdout_rows']:,} holdout rows; mode {m['mode']}")
    if "run_metrics" in meta:
        m = meta["run_metrics"]
        for who in ("challenger", "champion"):
            lines.append(f"  {who:<18} accuracy {m[f'{who}_accuracy']:.3f}  precision {m[f'{who}_precision']:.3f}"
                         f"  recall {m[f'{who}_recall']:.3f}  F1 {m[f'{who}_f1']:.3f}")
        lines.append(f"  promoted           {'yes' if m['promoted'] else 'no'}: {m['decision']}")
        for c in (m.get("gate") or {}).get("candidates", []):
            lines.append(f"  candidate          {c['name']}: {c['metric']} {c['candidate']:.3f} vs {c['champion']:.3f}, "
                         f"p={c['p_value']:.3g} (Holm {c['adjusted_p_value']:.3g}): {c['reason']}")
    if run.get("error_message"):
        lines.append(f"  note               {run['error_message']}")
    if run.get("log_url"):
        lines.append(f"  training log       {run['log_url']}")
    if metrics.get("challenger_version"):
        lines.append(f"  challenger version {metrics['challenger_version']}")
    return "\n".join(lines)


@command("request")
def request(args: argparse.Namespace) -> int:
    """Queue a retraining request, as a user would from the web UI; the request sensor starts its run."""
    from .defs.request_queue import OPTION_NAMES, InvalidRequest, check_reason

    try:
        reason = check_reason(args.reason)
    except InvalidRequest as exc:
        print(f"refused: {exc} (--reason)", file=sys.stderr)
        return 2
    with environment_resources("store") as (store,):
        try:
            queued = store.create_request(reason, priority=args.priority, requested_by=args.requested_by,
                                          options={"from_scratch": args.from_scratch, "force": args.force,
                                                   **({"learner": args.learner} if args.learner else {})})
        except InvalidRequest as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
    options = ", ".join(name for name in OPTION_NAMES if queued.options.get(name)) or "none"
    print(f"queued request {queued.id}: priority {queued.priority}, options {options}")
    return 0


@command("cancel")
def cancel(args: argparse.Namespace) -> int:
    """Cancel a pending retraining request, so that it never runs."""
    from .backends.store import StoreError

    with environment_resources("store") as (store,):
        try:
            cancelled = store.cancel_request(args.request_id)
        except StoreError as exc:
            print(f"refused: {one_line(exc)}", file=sys.stderr)
            return 1
    print(f"cancelled request {cancelled.id} ({cancelled.priority}: {cancelled.reason}); it will not run")
    return 0


@command("status")
def status(args: argparse.Namespace) -> int:
    """Print the champion, the latest retraining runs and the latest requests."""
    with environment_resources("store") as (store,):
        champion, runs, requests = store.champion(), store.latest_runs(args.limit), store.latest_requests(args.limit)
    print(f"store: {store.describe()}")
    print(champion_line(champion))
    print()
    print(table("latest runs", [{**run, "promoted": promoted(run)} for run in runs],
                ["created_at", "source", "status", "promoted", "model_version", "dataset_size", "dagster_run_id",
                 "error_message"]))
    print()
    print(table("latest requests", [vars(r) for r in requests],
                ["created_at", "priority", "status", "reason", "dagster_run_id", "error_message", "id"]))
    return 0


def promoted(run: dict) -> str:
    """Whether a run's challenger became champion: yes, no, or blank for a run that never reached the gate."""
    flag = (run.get("metrics") or {}).get("promoted")
    return "" if flag is None else ("yes" if flag else "no")


def champion_line(champion) -> str:
    if champion is None:
        return "champion: none yet"
    reference = "n/a" if champion.reference_accuracy is None else f"{champion.reference_accuracy:.3f}"
    return (f"champion: {champion.version} since {champion.promoted_at:%Y-%m-%d %H:%M} UTC, reference accuracy "
            f"{reference}: {champion.promotion_reason}")


def table(title: str, rows: list[dict], columns: list[str], width: int = 48) -> str:
    """`rows` as a fixed-width text table of `columns`, long values cut to `width` characters."""
    if not rows:
        return f"{title}: none"

    def cell(value) -> str:
        if value is None:
            return ""
        if hasattr(value, "strftime"):
            return f"{value:%Y-%m-%d %H:%M:%S}"
        text = " ".join(str(value).split())
        return text if len(text) <= width else text[: width - 1] + "…"

    frame = pd.DataFrame([[cell(row.get(c)) for c in columns] for row in rows], columns=columns)
    return f"{title}:\n{frame.to_string(index=False)}"


@command("rollback")
def rollback(args: argparse.Namespace) -> int:
    """Make an earlier model version champion again, recording why; its file must be intact."""
    from .rollback import RollbackRefused, roll_back

    with environment_resources("store", "artifacts") as (store, artifacts):
        try:
            done = roll_back(store, artifacts, args.version, args.reason, force=args.force)
        except RollbackRefused as exc:
            print(f"refused: {one_line(exc)}", file=sys.stderr)
            return 1 if exc.not_found else 2
    never = " (it had never been champion: --force)" if done.never_champion_before else ""
    print(f"rolled back: {done.version} is the champion{'' if never else ' again'} (was {done.previous or 'none'})"
          f"{never}; reason recorded: {done.reason}")
    return 0


@command("monitor")
def monitor(args: argparse.Namespace) -> int:
    """Serve the Monitoring page and its JSON API for the configured store, until Ctrl-C."""
    from . import settings
    from .defs.request_queue import InvalidRequest, check_requester
    from .monitor import Access, MonitorRefused, MonitorSettings, create_app, serve

    try:
        access = Access.for_bind(args.host, args.port, os.environ.get("REINFORCEMENT_MONITOR_TOKEN"),
                                 args.allowed_host or ())
        requested_by = check_requester(args.requested_by)
    except (MonitorRefused, InvalidRequest) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    page = MonitorSettings(refresh_seconds=settings.MONITOR_REFRESH_SECONDS, poll_seconds=settings.MONITOR_POLL_SECONDS,
                           lookback_days=settings.DEFAULT_LOOKBACK_DAYS, requested_by=requested_by)
    with environment_resources("store", "artifacts") as (store, artifacts):
        app = create_app(store, artifacts, access, page)
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"Monitoring page on http://{shown}:{args.port}/ ({store.describe()['backend']}; "
              f"{'token required' if access.token else 'loopback only, no token'}); Ctrl-C stops it", flush=True)
        serve(app, args.host, args.port)
    # The interpreter's last garbage collection over Dagster's and scikit-learn's objects takes 1-2 s
    # here, which Ctrl-C would wait for; everything that needed closing is closed.
    gc.freeze()
    return 0


@command("prune")
def prune(args: argparse.Namespace) -> int:
    """Delete the files of old candidates and old runs' asset outputs; registry rows stay."""
    from . import settings
    from .pruning import prune_artifacts

    keep = settings.KEEP_CANDIDATE_ARTIFACTS if args.keep is None else args.keep
    with environment_resources("store", "artifacts") as (store, artifacts):
        report = prune_artifacts(store, artifacts, keep, dry_run=args.dry_run)
    print(prune_lines(report))
    for failure in report.failures:
        print(f"warning: {failure}", file=sys.stderr)
    return 1 if report.failures else 0


def prune_lines(report) -> str:
    """What `prune` removed (or would): a line per model version, a line per run's outputs, the totals."""
    from .pruning import human_bytes

    verb = "would prune" if report.dry_run else "pruned"
    lines = []
    for v in report.versions:
        size = "file already gone" if v.size_bytes is None else human_bytes(v.size_bytes)
        lines.append(f"{verb} model version {v.version}: {v.artifact_path} ({size})")
    for run in report.runs:
        lines.append(f"{verb} asset outputs of run {run.dagster_run_id}: {len(run.paths)} file(s) "
                     f"({human_bytes(run.size_bytes)})")
    lines.append(report.summary() + (" (dry run: nothing was deleted)" if report.dry_run else ""))
    return "\n".join(lines)


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum` (and at most `maximum`)."""
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be {maximum} or less, got {value}")
        return value
    parse.__name__ = "whole number"  # what argparse names in "invalid whole number value"
    return parse


def number_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (or (low, high] with `low_open`)."""
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
        if not (low < value if low_open else low <= value) or not value <= high:
            bound = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be in {bound}{low:g}, {high:g}], got {raw}")
        return value
    parse.__name__ = "number"
    return parse


def keep_count(raw: str) -> int:
    """argparse type of --keep: a whole number, 0 or more."""
    from .core.retention import check_keep_count

    try:
        count = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    try:
        return check_keep_count(count)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@command("migrate")
def migrate(args: argparse.Namespace) -> int:
    """Apply the schema's migrations to the configured database (as its owner)."""
    import psycopg

    from .backends.embedded import EmbeddedServerError, database_url
    from .backends.postgres_store import error_text, redact_credentials
    from .backends.schema import SchemaError, migrate_as_owner, migration_files, version_of
    from .defs.resources import backend_from_environment

    if backend_from_environment(os.environ) == "supabase":
        print("refused: the Supabase backend reaches its database through PostgREST, which cannot migrate. Run "
              "`supabase db push` from this repository, or run this command without SUPABASE_URL and "
              "SUPABASE_SERVICE_KEY and with REINFORCEMENT_DATABASE_URL set to the project's direct connection: "
              "`env -u SUPABASE_URL -u SUPABASE_SERVICE_KEY REINFORCEMENT_DATABASE_URL=... reinforcement migrate`",
              file=sys.stderr)
        return 2
    with environment_resources("store") as (store,):
        if store.database_url:
            store.parameters()  # a URL libpq would quote back is refused first, naming what is wrong
        try:
            applied = migrate_as_owner(store.database_url or database_url(store.data_dir))
        except (SchemaError, EmbeddedServerError, psycopg.Error) as exc:
            text = error_text(exc) if isinstance(exc, psycopg.Error) else one_line(exc)
            print(f"refused: {redact_credentials(text, store.database_url)}", file=sys.stderr)
            return 1
    newest = version_of(migration_files()[-1])
    print(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied
          else f"the schema is up to date (newest migration {newest})")
    return 0


@command("stop")
def stop(args: argparse.Namespace) -> int:
    """Stop the embedded PostgreSQL of the data folder now."""
    from .backends.embedded import pgdata_of
    from .backends.embedded import stop as stop_server

    stopped, users = stop_server(os.environ["REINFORCEMENT_DATA_DIR"])
    where = pgdata_of(os.environ["REINFORCEMENT_DATA_DIR"])
    if not stopped:
        print(f"the embedded PostgreSQL in {where} is not running")
        return 0
    still = f"; processes {', '.join(map(str, users))} were using it and will start it again on their next use" \
        if users else ""
    print(f"stopped the embedded PostgreSQL in {where}{still}")
    return 0


@command("dev")
def dev(args: argparse.Namespace) -> int:
    """Run `dagster dev` on this package's definitions, with the data folder's Dagster instance."""
    command_line = [sys.executable, "-m", "dagster", "dev", "-m", "reinforcement_assets.definitions",
                    *args.dagster_args]
    print(f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}  REINFORCEMENT_DATA_DIR={os.environ['REINFORCEMENT_DATA_DIR']}")
    sys.stdout.flush()
    os.execv(sys.executable, command_line)
    return 0  # not reached: this process becomes `dagster dev`


@command("register")
def register(args: argparse.Namespace) -> int:
    """Adopt a deployed model: copy its file into artifact storage and register it (with --champion, promote it)."""
    from .backends.store import StoreError
    from .core.cycle import NotAClassifier
    from .registration import RegistrationError, register_model

    names = [n.strip() for n in args.feature_names.split(",") if n.strip()] if args.feature_names else None
    text = [n.strip() for n in args.categorical.split(",") if n.strip()] if args.categorical else None
    with environment_resources("store", "artifacts") as (store, artifacts):
        try:
            done = register_model(store, artifacts, args.model_file, version=args.version, champion=args.champion,
                                  reason=args.reason, feature_names=names, reference_accuracy=args.reference_accuracy,
                                  categorical=text)
        except FileNotFoundError:
            print(f"refused: no file {args.model_file}", file=sys.stderr)
            return 2
        except (NotAClassifier, RegistrationError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        except StoreError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
    for warning in done.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    v = done.version
    reference = "none" if v.reference_accuracy is None else f"{v.reference_accuracy:.3f}"
    if args.reference_accuracy is None and done.logged_rows:
        reference += f" on {done.logged_rows:,} logged rows"
    print(f"registered {v.version}: sha256 {v.sha256}, {len(v.feature_names)} features ({v.schema.describe()}), "
          f"classes {list(v.classes)} ({v.class_type}), reference accuracy {reference}")
    print(f"champion: {v.version}" if done.champion else "not promoted (add --champion to make it the champion)")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="reinforcement", description=__doc__)
    root.add_argument("--data-dir", help="folder of the embedded database and artifacts (default .reinforcement)")
    sub = root.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the loop once on a generated week of drifting predictions")
    p.add_argument("--rows", type=whole_number(100), default=20_000,
                   help="predictions in the window, 100 or more (default 20000)")
    p.add_argument("--seed", type=whole_number(0), default=0)
    p.add_argument("--lookback-days", type=number_in(0, 3650, low_open=True), default=7.0,
                   help="days in the window (default 7)")
    p = sub.add_parser("request", help="queue a retraining request (run by the retraining_requests sensor)")
    p.add_argument("--reason", required=True, help="why the model should be retrained")
    p.add_argument("--priority", choices=["high", "normal", "low"], default="normal")
    p.add_argument("--from-scratch", action="store_true", help="refit the model's family instead of updating it")
    p.add_argument("--force", action="store_true", help="retrain even with fewer errors than the minimum")
    p.add_argument("--learner", help="refit with this built-in learner (sgd, logistic_regression, "
                                     "hist_gradient_boosting, random_forest)")
    p.add_argument("--requested-by", help="the requesting user's id (UUID)")
    p = sub.add_parser("status", help="print the champion, the latest runs and the latest requests")
    p.add_argument("--limit", type=whole_number(1), default=10, help="rows per table, 1 or more (default 10)")
    p = sub.add_parser("rollback", help="make an earlier model version champion again")
    p.add_argument("version", nargs="?", help="the version to restore (default: the previous champion)")
    p.add_argument("--reason", required=True, help="why, recorded as the promotion reason")
    p.add_argument("--force", action="store_true",
                   help="also restore a version that was never champion (a candidate the gate did not promote)")
    p = sub.add_parser("cancel", help="cancel a pending retraining request")
    p.add_argument("request_id", help="the request's id (see `reinforcement status`)")
    p = sub.add_parser("monitor", help="serve the Monitoring page (runs, the gate's reasons, a retrain button) "
                                       "and its JSON API")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; any other needs REINFORCEMENT_MONITOR_TOKEN)")
    p.add_argument("--port", type=whole_number(1, 65535), default=8765, help="port (default 8765)")
    p.add_argument("--requested-by", help="the user id (UUID) the page's requests carry")
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="a host name users reach the server by (e.g. behind a proxy); repeatable")
    p = sub.add_parser("prune", help="delete old candidates' model files and old runs' asset outputs "
                                     "(registry rows stay)")
    p.add_argument("--keep", type=keep_count, metavar="N",
                   help="candidates and runs to keep besides the champion's line (default: the "
                        "KEEP_CANDIDATE_ARTIFACTS setting, 20 unless set)")
    p.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    sub.add_parser("migrate", help="apply the schema's migrations to the configured database (as its owner)")
    sub.add_parser("stop", help="stop the embedded PostgreSQL of the data folder")
    sub.add_parser("dev", add_help=False,  # every option after `dev`, --help too, is `dagster dev`'s
                   help="run `dagster dev` (UI, daemon) with the data folder's Dagster instance; options after "
                        "`dev` go to it (e.g. -p 3001)")
    p = sub.add_parser("register", help="adopt a deployed model file (joblib): register it, optionally as champion")
    p.add_argument("model_file", help="a fitted scikit-learn classifier saved with joblib (only load files you trust)")
    p.add_argument("--version", help="its version, as logged in prediction_evaluations.model_version "
                                     "(default: file name and sha256 prefix)")
    p.add_argument("--champion", action="store_true", help="make it the champion (compare-and-swap)")
    p.add_argument("--reason", help="recorded as the promotion reason")
    p.add_argument("--feature-names", help="a,b,c: for a model fitted without feature names, in input order")
    p.add_argument("--categorical", help="a,b: features the model takes as text, where its own encoders do not "
                                         "say so (a OneHotEncoder, OrdinalEncoder or categorical HGB does)")
    p.add_argument("--reference-accuracy", type=number_in(0, 1),
                   help="its accuracy on unseen data (default: measured on its logged rows)")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; its output survives a closed pipe (`reinforcement status | head`)."""
    try:
        code = run_command(argv)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away: say nothing more (Python would otherwise fail flushing at exit).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def run_command(argv: Sequence[str] | None) -> int:
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    root = parser()
    args, dagster_args = root.parse_known_args(argv)
    if args.command == "dev":
        args.dagster_args = dagster_args
    elif dagster_args:
        root.error(f"unrecognized arguments: {' '.join(dagster_args)}")
    folder = use_data_dir(args.data_dir, prepare=False)  # nothing is created before the folder is checked
    try:
        from .backends.store import StoreError
        from .settings import SettingsError  # reading the settings validates them
        missing = missing_database(args.command, folder)
    except ValueError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    if missing:
        print(f"refused: {missing}", file=sys.stderr)
        return 2
    prepare_dagster_home(folder)

    try:
        return COMMANDS[args.command](args)
    except (StoreError, SettingsError) as exc:  # already a clear message: no traceback
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1


def one_line(exc: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
