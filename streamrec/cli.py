"""`streamrec`: one command line for every stage of the pipeline.

Global options come first (``streamrec --config my.toml --set joiner.window_ms=60000 join``);
each subcommand's own flags override the config file. Heavy imports stay inside the commands
so ``--help`` is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
