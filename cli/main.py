"""`streamrec`: one command line for every stage of the pipeline.

Global options come first (``streamrec --config my.toml --set joiner.window_ms=60000 join``);
each subcommand's own flags override the config file. Heavy imports stay inside the commands
so ``--help`` is instant. A failure ends in one line on stderr and an exit code of
``streamrec.errors`` (the README's table); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import archive as sinks_cli
from cli.preflight import preflight
from cli.progress import live, waiting
from streamrec import errors
from streamrec.config import ConfigError, Settings, load_config
from trainer.experiments import cli as experiments_cli

app = typer.Typer(
    help="Real-time recommendation training pipeline: replay logs, join, archive, train, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    epilog="Exit codes: " + "; ".join(f"{code} {what.split(':')[0]}" for code, what in errors.EXIT_CODES.items()),
)
stack_app = typer.Typer(help="The local stack: an Apache Kafka broker (KRaft) and the topics.", no_args_is_help=True)
replay_app = typer.Typer(help="Turn a dataset into the feature log and the action log on Kafka.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(replay_app, name="replay")
features_app = typer.Typer(help="The feature spec (the data contract): check a change, show the one in use.",
                            no_args_is_help=True)
app.add_typer(features_app, name="features")
flink_app = typer.Typer(help="The join on Flink: a local standalone cluster and `flink run` of jobs/flink_join.py.",
                        no_args_is_help=True)
app.add_typer(flink_app, name="flink")
sinks_cli.register(app)  # archive, archive-ls, hdfs up|down|status
experiments_cli.register(app)  # experiment collisionless | sync-interval


topics_app = typer.Typer(help="The pipeline's topics on any Kafka cluster (kafka.bootstrap).", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


@dataclass
class _Options:
    """Root options that ``main`` needs after the command has returned or raised."""

    debug: bool = False


OPTIONS = _Options()


def settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"streamrec {version('streamrec')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("streamrec (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config file (default: ./streamrec.toml if present)")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="override one setting, e.g. --set joiner.window_ms=60000 (repeatable)"),
    ] = None,
    log_level: Annotated[str | None, typer.Option(
        "--log-level", help="DEBUG | INFO | WARNING | ERROR (default log.level)")] = None,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help="text | json: one JSON object per line (default log.format)")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="on a failure, show the traceback")] = False,
    _: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                    help="print the version and exit")] = False,
) -> None:
    from streamrec.logs import setup_logging

    OPTIONS.debug = debug
    flags = [f"log.level={json.dumps(log_level.upper())}"] if log_level else []
    flags += [f"log.format={json.dumps(log_format)}"] if log_format else []
    try:
        ctx.obj = load_config(config, [*(set_ or []), *flags])
    except ConfigError as e:
        typer.secho(f"streamrec: {errors.one_line(e)}", fg="red", err=True)
        raise typer.Exit(errors.CONFIG) from None
    setup_logging(ctx.obj.log)


def print_json(value: Any) -> None:
    """A result on stdout as strict JSON (RFC 8259): NaN and infinities, which json.dumps would write as
    bare NaN / Infinity that other parsers refuse, become null."""

    def strict(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: strict(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [strict(x) for x in v]
        return v

    typer.echo(json.dumps(strict(value), default=str, allow_nan=False))


@app.command("config")
def show_config(ctx: typer.Context) -> None:
    """Print the effective configuration (file + --set overrides + defaults) as JSON."""
    typer.echo(settings(ctx).model_dump_json(indent=2))


@topics_app.command("create")
def topics_create(ctx: typer.Context) -> None:
    """Create the four topics on kafka.bootstrap (partitions from kafka.topics.partitions, replicas from
    kafka.topics.replication_factor); topics that exist are left as they are."""
    from streamrec.kafka import check_access, create_topics

    s = settings(ctx)
    check_access(s.kafka)
    counts = s.kafka.topics.partition_counts()
    create_topics(s.kafka, counts)
    typer.echo(f"topics on {s.kafka.bootstrap}: " + ", ".join(f"{n}({p})" for n, p in counts.items())
               + f", replication factor {s.kafka.topics.replication_factor}")


# ---- features ---------------------------------------------------------------------------------
@features_app.command("check")
def features_check(
    old: Annotated[Path, typer.Argument(help="the spec in use: a spec file, or a config file with [features]")],
    new: Annotated[Path, typer.Argument(help="the changed spec (same kinds of file)")],
) -> None:
    """Is changing the feature spec from OLD to NEW compatible? Exit 0 if so, 1 if not (with why)."""
    from schemas.spec import SpecError, compatibility, load_spec

    try:
        before, after = load_spec(old), load_spec(new)
    except SpecError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(errors.CONFIG) from None
    problems, notes = compatibility(before, after)
    for p in problems:
        typer.secho(f"incompatible: {p}", fg="red")
    for n in notes:
        typer.echo(f"note: {n}")
    if problems:
        typer.secho(f"{new} is NOT compatible with {old} ({len(problems)} problem(s))", fg="red")
        raise typer.Exit(errors.VERDICT)
    typer.secho(f"{new} is compatible with {old}", fg="green")


@features_app.command("show")
def features_show(ctx: typer.Context) -> None:
    """The feature spec in use (after the config file and --set overrides) as JSON: slots by number."""
    spec = settings(ctx).features
    typer.echo(spec.model_dump_json(indent=2))


# ---- setup ----------------------------------------------------------------------------------
@app.command("setup")
def setup(
    dest: Annotated[Path | None, typer.Option(
        help="where the jars go (default: $STREAMREC_VENDOR, else a checkout's .vendor, else "
             "~/.cache/streamrec/vendor), where the stack, HDFS and Flink commands then find them")] = None,
    part: Annotated[list[str] | None, typer.Option(
        help="only this part (repeatable): kafka, flink, hadoop, hadoop-client (default: all)")] = None,
    offline: Annotated[bool, typer.Option(
        "--offline", help="from Maven's local repository only (mvn -o), no download")] = False,
) -> None:
    """Fetch the JVM parts (Apache Kafka, the Flink Kafka connector, Hadoop) from Maven Central with Maven,
    as deploy/pom.xml pins them: what an installed wheel needs for `stack up`, `hdfs up` and the Flink job
    (a checkout gets them from `make setup`). Parts already fetched from the same pom are skipped."""
    from deploy.jvm import PARTS, fetch_jars, vendor_home

    where = dest or vendor_home()
    try:
        counts = fetch_jars(where, tuple(part or PARTS), offline=offline, say=typer.echo)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(errors.UNREACHABLE if isinstance(e, RuntimeError) else errors.CONFIG) from None
    found = where.resolve() == vendor_home().resolve()  # else the commands must be told where they are
    typer.echo(f"jars in {where.resolve()}: " + ", ".join(f"{p} {n}" for p, n in counts.items())
               + ("" if found else f" (export STREAMREC_VENDOR={where.resolve()} to use them)"))


# ---- stack ----------------------------------------------------------------------------------
@stack_app.command("up")
def stack_up(ctx: typer.Context) -> None:
    """Start the broker on 127.0.0.1:<stack.broker_port> and create the topics (idempotent)."""
    from deploy.stack import up

    up(settings(ctx))  # prints each step itself


@stack_app.command("down")
def stack_down(ctx: typer.Context) -> None:
    """Stop only what `stack up` started (by its pid file)."""
    from deploy.stack import down

    down(settings(ctx))


@stack_app.command("status")
def stack_status(ctx: typer.Context) -> None:
    """Show whether the broker runs, and each topic's message count; exit 3 if it does not run."""
    from deploy.stack import status

    if not status(settings(ctx)):
        raise typer.Exit(errors.UNREACHABLE)


# ---- replay ---------------------------------------------------------------------------------
@replay_app.command("movielens")
def replay_movielens(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option(help="ratings to replay (0 = all 100,000)")] = None,
    rate: Annotated[float | None, typer.Option(help="cap on messages/s (0 = as fast as possible)")] = None,
    speed: Annotated[float | None, typer.Option(help="dataset seconds per replay second")] = None,
    seed: Annotated[int | None, typer.Option(help="seed: same seed, same messages")] = None,
) -> None:
    """Replay MovieLens-100K: each rating a served request of K shown items, impressions and clicks."""
    s = _with(settings(ctx), "replay", limit=limit, rate=rate, speed=speed, seed=seed)
    _replay(s, "movielens")


@replay_app.command("synthetic")
def replay_synthetic(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="requests to generate")] = 100_000,
    rate: Annotated[float | None, typer.Option(help="cap on messages/s (0 = as fast as possible)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed: same seed, same messages")] = None,
) -> None:
    """SYNTHETIC Zipf traffic with the MovieLens shapes, for scale tests (marked source=synthetic)."""
    s = _with(settings(ctx), "replay", limit=limit, rate=rate, seed=seed)
    _replay(s, "synthetic")


def _replay(s: Settings, source: str) -> None:
    """Run a replay; its logs carry MovieLens's features, which another feature spec refuses (said clearly)."""
    preflight(s, ["features", "actions"])
    from jobs.replay import run_replay
    from schemas.spec import SpecError

    try:
        run_replay(s, source=source)
    except SpecError as e:
        typer.secho(f"the {source} replay logs MovieLens's features, and the feature spec of this config refuses "
                    f"them ({e}); run it with the default spec, examples/movielens/features.toml", fg="red", err=True)
        raise typer.Exit(2) from None


# ---- join -----------------------------------------------------------------------------------
@app.command("join")
def join(
    ctx: typer.Context,
    from_start: Annotated[
        bool, typer.Option(help="discard saved join state and offsets, consume from offset 0")
    ] = False,
    stop_when_idle: Annotated[
        float | None, typer.Option(help="stop (after a final checkpoint) when no input came for S seconds")
    ] = None,
    max_seconds: Annotated[float | None, typer.Option(help="stop after S seconds")] = None,
    drain: Annotated[bool, typer.Option(
        help="the input is complete: on stop, close every window and fire every timer before the last "
             "checkpoint (like `flink stop --drain`; the drained state then only dead-letters new input)")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        help="Prometheus endpoint on metrics.host (0 = a free port; default joiner.metrics_port, unset = off)")]
    = None,
    cache_mb: Annotated[float | None, typer.Option(help="in-memory join cache bound, MB")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="RocksDB state directory")] = None,
) -> None:
    """Embedded join runner: features + actions -> examples + dead-letter (RocksDB state, crash-safe).

    Resumes from the offsets saved with its state; SIGTERM stops it cleanly after a checkpoint.
    """
    cache = int(cache_mb * (1 << 20)) if cache_mb is not None else None
    s = _with(settings(ctx), "joiner", metrics_port=metrics_port, cache_bytes=cache, state_dir=state_dir)
    preflight(s, ["features", "actions"])
    from jobs.join_runner import run_join

    current: list[Any] = []  # the runner of the moment (a new one after a rewind)

    def reading() -> tuple[int, str] | None:
        if not current:
            return None
        c = current[-1].engine.counts
        return c.get("events", 0), f"events; {c.get('joined', 0):,} examples, lag {current[-1].lag:,}"

    with live("join", reading):
        st = run_join(s, from_start=from_start, stop_when_idle=stop_when_idle, max_seconds=max_seconds,
                      drain=drain, on_runner=current.append)
    typer.echo(f"join: {st.events} events -> {st.examples} examples, {st.dead_letters} dead letters "
               f"{st.dead_reasons} in {st.seconds:.1f}s")


# ---- demo -----------------------------------------------------------------------------------
@app.command("demo")
def demo(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="MovieLens ratings to replay (0 = all 100,000)")] = 0,
    down: Annotated[bool, typer.Option("--down/--keep-stack", help="stop the broker (and HDFS) at the end")] = False,
    hdfs: Annotated[bool, typer.Option("--hdfs", help="archive to a local HDFS (started on free ports)")] = False,
    flink: Annotated[bool, typer.Option("--flink", help="join on a PyFlink mini cluster instead of the embedded runner")
                     ] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="override one setting, as the global --set (so `make demo ARGS=\"--set k=v\"` works)")
    ] = None,
) -> None:
    """The whole loop: stack up, MovieLens replay, joiner + archive + online trainer together, then a report.

    Each run gets its own topics and a folder .run/demo/<time>/ with report.md, report.json,
    auc.png, freshness.png, the archive and the trainer's snapshots (.run/demo/latest points there).
    """
    from jobs.demo import run_demo

    s = settings(ctx)
    if set_:
        root = ctx.find_root().params
        s = load_config(root.get("config"), [*(root.get("set_") or []), *set_])
    report = run_demo(_with(s, "replay", limit=limit), down=down, hdfs=hdfs, flink=flink)
    if not all(c["ok"] for c in report["checks"].values()):
        raise typer.Exit(errors.VERDICT)


# ---- train ----------------------------------------------------------------------------------
@app.command("train")
def train(
    ctx: typer.Context,
    batch: Annotated[str | None, typer.Option(
        "--batch", help="train on archive hours FROM..TO (end exclusive), e.g. 2026-11-24T00..2026-11-24T06")] = None,
    online: Annotated[bool, typer.Option(
        "--online", help="then train on the examples topic (continues from the newest snapshot)")] = False,
    restore: Annotated[bool, typer.Option(
        "--restore", help="resume from the newest snapshot and replay from its stream positions")] = False,
    stop_when_idle: Annotated[float | None, typer.Option(
        "--stop-when-idle", help="online: stop after this many seconds without new examples")] = None,
    metrics_csv: Annotated[Path | None, typer.Option(help="per-window AUC / log loss CSV")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG of the AUC curve, written at the end")] = None,
    distributed: Annotated[bool, typer.Option(
        "--distributed", help="several processes: tables sharded by FID over the ranks, each rank on its own "
        "partitions (or archive rows), dense part data-parallel. Outside torchrun it starts torchrun on this "
        "host with --nproc ranks; under torchrun (any number of hosts) it is one rank")] = False,
    nproc: Annotated[int | None, typer.Option(
        "--nproc", help="ranks --distributed starts on this host (trainer.distributed.nproc)")] = None,
) -> None:
    """Embedded async DeepFM trainer: progressive AUC, touched-key sync to serving, snapshots.

    One process by default; --distributed for several (README: the trainer on several processes or hosts).
    Prints its summary as one strict JSON object on stdout (progress and logs go to stderr; with
    --distributed, rank 0's: the job's). SIGTERM / Ctrl-C: the batch in flight is trained on, a final
    snapshot is written, exit 0."""
    s = _with(settings(ctx), "trainer", metrics_csv=metrics_csv, plot=plot)
    if distributed:
        from trainer.distributed.launch import relaunch, under_torchrun

        _with(s, "trainer", distributed=s.trainer.distributed.model_copy(
            update={"nproc": nproc or s.trainer.distributed.nproc}))
        if not under_torchrun():
            raise typer.Exit(relaunch(s.trainer.distributed, "cli.main", sys.argv[1:]))
    if online:
        preflight(s, ["examples"])
    from trainer.run import train as run_train

    summary = run_train(s, batch=batch, online=online, restore=restore, stop_when_idle_s=stop_when_idle,
                        distributed=distributed)
    if summary is not None:
        print_json(summary)


# ---- serve ----------------------------------------------------------------------------------
@app.command("serve")
def serve(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="HTTP port (0 = a free one, printed) [serving.port]")] = None,
    host: Annotated[str | None, typer.Option(help="bind address [serving.host]")] = None,
    replica_id: Annotated[str | None, typer.Option(help="name in logs [serving.replica_id]")] = None,
    port_file: Annotated[Path | None, typer.Option(help="write the bound port here once listening")] = None,
    no_log: Annotated[bool, typer.Option("--no-log", help="do not log FeatureLogs of served requests")] = False,
) -> None:
    """A serving replica: bootstraps from the newest trainer snapshot, applies the trainer's deltas
    from kafka.topics.params, and answers POST /score, /score/batch; GET /metrics, /healthz,
    /readyz, /stats. Every served request's FeatureLog goes to the features topic (what it scored),
    so actions logged with the returned request_id join back to exactly those features.

    Any number of replicas may run; each reads every delta. See README "Serving".
    """
    s = _with(settings(ctx), "serving", port=port, host=host, replica_id=replica_id,
              log_features=False if no_log else None)
    preflight(s, ["features"] if s.serving.log_features else [])  # the params topic is created if missing
    from serving.run import serve as run_serve

    run_serve(s, port_file)


# ---- simulate --------------------------------------------------------------------------------
@app.command("simulate")
def simulate(
    ctx: typer.Context,
    quick: Annotated[bool, typer.Option("--quick", help="the test preset: 120 users, 900 requests, ~1 min")] = False,
    out: Annotated[Path | None, typer.Option(help="report folder (default: simulate.out_dir/<time>)")] = None,
) -> None:
    """A live closed loop with an A/B test. Simulated MovieLens users ask model servers for a feed
    (by default 50 candidates they were not shown yet, the top 10 shown) and click what they rated >= 4 and like
    what they rated 5, by ratings no model ever saw (unrated items: simulate.base_rate). Users are
    split by a hash of their id between two arms that start from the same model, batch-trained on
    the first half of the ratings: ONLINE, a replica that applies the deltas of a trainer learning
    from both arms' joined logs as the run goes, and FROZEN, a replica that never does
    (serving.follow_deltas=false).

    The run starts its own joiner, online trainer and two replicas on the configured broker, on topics of its own.

    Writes report.md, report.json and plot.png: click and like rates per window and arm with 95 % Wilson intervals.

    Settings: section simulate, e.g. --set simulate.requests=3000. Defaults: 6,000 requests at 40/s, about 3 min.
    """
    import sys

    from rich.console import Console

    from simulate.report import rich_table
    from simulate.run import simulate as run_simulation

    def say(msg: str) -> None:
        print(f"simulate: {msg}", file=sys.stderr, flush=True)

    try:
        report, run = run_simulation(settings(ctx), quick=quick, out=out, say=say)
    except ValueError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None
    console = Console()
    console.print(rich_table(report))
    for part, d in report["totals"]["online − frozen"].items():
        console.print(f"online − frozen, {part}: " + ", ".join(
            f"{lb} {d[lb]['rate']:+.4f} [{d[lb]['lo']:+.4f}, {d[lb]['hi']:+.4f}]" for lb in report["labels"]))
    console.print(f"report: {run / 'report.md'} (report.json, plot.png beside it)")


# ---- flink ----------------------------------------------------------------------------------
def _config_args(ctx: typer.Context) -> list[str]:
    """The global --config/--set flags again, for a job process that loads the config itself; without
    secrets, which go in its environment (``secrets.secret_env``)."""
    from streamrec.config import public_overrides

    root = ctx.find_root().params
    args = ["--config", str(Path(root["config"]).resolve())] if root.get("config") else []
    for o in public_overrides(root.get("set_") or []):
        args += ["--set", o]
    return args


@flink_app.command("up")
def flink_up(ctx: typer.Context) -> None:
    """Start a JobManager + flink.taskmanagers TaskManagers on free 127.0.0.1 ports (idempotent); state in
    flink.run_dir."""
    from deploy.flink import up

    with waiting("starting the Flink JobManager and TaskManagers"):
        c = up(settings(ctx).flink)
    typer.echo(f"Flink cluster up: {c.rest_url} (conf {c.conf_dir}, logs {c.log_dir})")


@flink_app.command("down")
def flink_down(ctx: typer.Context) -> None:
    """Stop only the daemons `flink up` started (by the pid files in flink.run_dir)."""
    from deploy.flink import down

    typer.echo("Flink cluster stopped" if down(settings(ctx).flink) else "no Flink cluster was running")


@flink_app.command("status")
def flink_status(ctx: typer.Context) -> None:
    """Whether the cluster runs, its REST address, task slots and jobs."""
    from deploy.flink import status

    print_json(status(settings(ctx).flink))


@flink_app.command("submit", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flink_submit(
    ctx: typer.Context,
    jobmanager: Annotated[str | None, typer.Option(
        help="HOST:PORT of an existing cluster's JobManager REST endpoint (default: flink.jobmanager, else the "
             "local cluster of `flink up`)")] = None,
    from_savepoint: Annotated[str | None, typer.Option(help="resume from this savepoint (an upgrade or rescale)")]
    = None,
    parallelism: Annotated[int | None, typer.Option(min=1, help="job parallelism (default flink.parallelism)")]
    = None,
    attached: Annotated[bool, typer.Option(help="wait for the job to end (use with --stop-offsets)")] = False,
) -> None:
    """`flink run -py jobs/flink_join.py` with the project shipped as a zip (-pyfs), from any directory;
    extra args go to the job (e.g. --stop-offsets offsets.json)."""
    from deploy.flink import submit
    from streamrec.secrets import secret_env

    s = _with(settings(ctx), "flink", jobmanager=jobmanager)
    r = submit(s.flink, _config_args(ctx) + list(ctx.args), detached=not attached, from_savepoint=from_savepoint,
               parallelism=parallelism, cwd=Path.cwd(), env=secret_env(s))
    typer.echo(r.stdout[-4000:])
    if r.returncode != 0:
        typer.secho(r.stderr[-4000:], fg="red", err=True)
        raise typer.Exit(r.returncode)


@flink_app.command("stop")
def flink_stop(
    ctx: typer.Context,
    jobmanager: Annotated[str | None, typer.Option(help="HOST:PORT of the JobManager (as for submit)")] = None,
    job_id: Annotated[str | None, typer.Option(help="the job (default: the running job named flink.job_name)")]
    = None,
    savepoint_dir: Annotated[str | None, typer.Option(help="where (default flink.savepoint_dir; a URI or path)")]
    = None,
    drain: Annotated[bool, typer.Option(help="fire every timer first (the input is complete)")] = False,
) -> None:
    """Stop the job with a savepoint and print its path: resubmit with `flink submit --from-savepoint PATH`
    (same or another parallelism, a new version of the job)."""
    from deploy.flink import stop

    cfg = _with(settings(ctx), "flink", jobmanager=jobmanager).flink
    try:
        typer.echo(stop(cfg, job_id=job_id, savepoint_dir=savepoint_dir, drain=drain))
    except RuntimeError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(1) from None


@flink_app.command("run-local", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flink_run_local(ctx: typer.Context) -> None:
    """Run the job on an in-process mini cluster (thread mode); extra args go to the job."""
    import os

    from jobs.flink_join import main as job_main
    from streamrec.secrets import secret_env

    os.environ.update(secret_env(settings(ctx)))  # the job reloads the config: its secrets from here
    raise typer.Exit(job_main(_config_args(ctx) + list(ctx.args)))


def _with(s: Settings, section: str, **values: object) -> Settings:
    """Apply the flags that were given onto a config section, validated."""
    sec = getattr(s, section)
    try:
        for k, v in values.items():
            if v is not None:
                setattr(sec, k, v)
    except ValueError as e:
        typer.secho(f"invalid --{k}: {e}", fg="red", err=True)
        raise typer.Exit(errors.CONFIG) from None
    return s


def main() -> None:
    """The console script: every failure ends in one line on stderr and its exit code
    (``streamrec.errors``); ``--debug`` lets the traceback through instead."""
    from confluent_kafka import KafkaException

    try:
        app()
    except Exception as e:
        if OPTIONS.debug:
            raise
        if isinstance(e, errors.StreamrecError):
            code, line = e.exit_code, errors.one_line(e)
        elif isinstance(e, KafkaException | ConnectionError | TimeoutError):
            code, line = errors.UNREACHABLE, f"{type(e).__name__}: {errors.one_line(e)}"
        else:
            code, line = errors.INTERNAL, (f"unexpected error, {type(e).__name__}: {errors.one_line(e)} "
                                           "(rerun with --debug for the traceback)")
        print(f"streamrec: {line}", file=sys.stderr)
        raise SystemExit(code) from None


if __name__ == "__main__":  # torchrun -m cli.main (train --distributed)
    main()
