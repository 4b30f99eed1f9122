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

app = typer.Typer(
    help="Real-time recommendation training pipeline: replay logs, join, archive, train, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
stack_app = typer.Typer(help="The local stack: a Kafka-protocol broker (Tansu) and the topics.", no_args_is_help=True)
replay_app = typer.Typer(help="Turn a dataset into the feature log and the action log on Kafka.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(replay_app, name="replay")
sinks_cli.register(app)  # archive, archive-ls, hdfs up|down|status


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
    from jobs.replay import run_replay

    s = _with(settings(ctx), "replay", limit=limit, rate=rate, speed=speed, seed=seed)
    run_replay(s, source="movielens")


@replay_app.command("synthetic")
def replay_synthetic(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="requests to generate")] = 100_000,
    rate: Annotated[float | None, typer.Option(help="cap on messages/s (0 = as fast as possible)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed: same seed, same messages")] = None,
) -> None:
    """SYNTHETIC Zipf traffic with the MovieLens shapes, for scale tests (marked source=synthetic)."""
    from jobs.replay import run_replay

    s = _with(settings(ctx), "replay", limit=limit, rate=rate, seed=seed)
    run_replay(s, source="synthetic")


# ---- demo -----------------------------------------------------------------------------------
@app.command("demo")
def demo(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="MovieLens ratings to replay (0 = all 100,000)")] = 0,
    down: Annotated[bool, typer.Option("--down/--keep-stack", help="stop the broker at the end")] = False,
) -> None:
    """Start the local stack, replay MovieLens and run the pipeline on it, then print a report."""
    from jobs.demo import run_demo

    run_demo(_with(settings(ctx), "replay", limit=limit), down=down)


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
    app()
