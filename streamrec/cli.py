"""`streamrec`: one command line for every stage of the pipeline.

Global options come first (``streamrec --config my.toml --set joiner.window_ms=60000 join``);
each subcommand's own flags override the config file. Heavy imports stay inside the commands
so ``--help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sinks import cli as sinks_cli
from streamrec.config import ConfigError, Settings, load_config
from trainer.experiments import cli as experiments_cli

app = typer.Typer(
    help="Real-time recommendation training pipeline: replay logs, join, archive, train, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
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


def settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


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
) -> None:
    try:
        ctx.obj = load_config(config, set_ or [])
    except ConfigError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None


@app.command("config")
def show_config(ctx: typer.Context) -> None:
    """Print the effective configuration (file + --set overrides + defaults) as JSON."""
    typer.echo(settings(ctx).model_dump_json(indent=2))


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
        raise typer.Exit(2) from None
    problems, notes = compatibility(before, after)
    for p in problems:
        typer.secho(f"incompatible: {p}", fg="red")
    for n in notes:
        typer.echo(f"note: {n}")
    if problems:
        typer.secho(f"{new} is NOT compatible with {old} ({len(problems)} problem(s))", fg="red")
        raise typer.Exit(1)
    typer.secho(f"{new} is compatible with {old}", fg="green")


@features_app.command("show")
def features_show(ctx: typer.Context) -> None:
    """The feature spec in use (after the config file and --set overrides) as JSON: slots by number."""
    spec = settings(ctx).features
    typer.echo(spec.model_dump_json(indent=2))


# ---- stack ----------------------------------------------------------------------------------
@stack_app.command("up")
def stack_up(ctx: typer.Context) -> None:
    """Start the broker on 127.0.0.1:<stack.broker_port> and create the topics (idempotent)."""
    from deploy.stack import up

    up(settings(ctx))


@stack_app.command("down")
def stack_down(ctx: typer.Context) -> None:
    """Stop only what `stack up` started (by its pid file)."""
    from deploy.stack import down

    down(settings(ctx))


@stack_app.command("status")
def stack_status(ctx: typer.Context) -> None:
    """Show whether the broker runs, and each topic's message count."""
    from deploy.stack import status

    status(settings(ctx))


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
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus endpoint on metrics.host (0 = free port)")]
    = None,
    cache_mb: Annotated[float | None, typer.Option(help="in-memory join cache bound, MB")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="RocksDB state directory")] = None,
) -> None:
    """Embedded join runner: features + actions -> examples + dead-letter (RocksDB state, crash-safe).

    Resumes from the offsets saved with its state; SIGTERM stops it cleanly after a checkpoint.
    """
    import logging

    from jobs.join_runner import run_join

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cache = int(cache_mb * (1 << 20)) if cache_mb is not None else None
    s = _with(settings(ctx), "joiner", metrics_port=metrics_port, cache_bytes=cache, state_dir=state_dir)
    st = run_join(s, from_start=from_start, stop_when_idle=stop_when_idle, max_seconds=max_seconds, drain=drain)
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
) -> None:
    """The whole loop: stack up, MovieLens replay, joiner + archive + online trainer together, then a report.

    Each run gets its own topics and a folder .run/demo/<time>/ with report.md, report.json,
    auc.png, freshness.png, the archive and the trainer's snapshots (.run/demo/latest points there).
    """
    from jobs.demo import run_demo

    report = run_demo(_with(settings(ctx), "replay", limit=limit), down=down, hdfs=hdfs, flink=flink)
    if not all(c["ok"] for c in report["checks"].values()):
        raise typer.Exit(1)


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
) -> None:
    """Embedded async DeepFM trainer: progressive AUC, touched-key sync to serving, snapshots."""
    import json

    from trainer.run import train as run_train

    s = _with(settings(ctx), "trainer", metrics_csv=metrics_csv, plot=plot)
    try:
        summary = run_train(s, batch=batch, online=online, restore=restore, stop_when_idle_s=stop_when_idle)
    except (ValueError, FileNotFoundError) as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, default=str))


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
    import logging

    from serving.run import serve as run_serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    s = _with(settings(ctx), "serving", port=port, host=host, replica_id=replica_id,
              log_features=False if no_log else None)
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
    import json

    from deploy.flink import status

    typer.echo(json.dumps(status(settings(ctx).flink)))


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
        raise typer.Exit(2) from None
    return s


def main() -> None:
    """The console script: a bad setting (a refused Kafka login included) ends in one line, exit code 2."""
    try:
        app()
    except ConfigError as e:
        typer.secho(str(e), fg="red", err=True)
        raise SystemExit(2) from None
