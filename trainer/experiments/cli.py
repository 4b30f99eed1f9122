"""`streamrec experiment ...`: the command group, registered by the top-level CLI (``register``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The paper's claims, rerun on MovieLens-100K with the trainer's own model and tables. "
                       "Each writes report.md, report.json and plot.png under experiments.out_dir/<name>/.",
                  no_args_is_help=True)

Quick = Annotated[bool, typer.Option("--quick", help="tiny settings (a few thousand ratings, 2-3 seeds): a smoke run")]
Out = Annotated[Path | None, typer.Option("--out", help="report folder (default: experiments.out_dir/<name>)")]


def _run(ctx: typer.Context, name: str, quick: bool, out: Path | None) -> None:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from trainer.experiments.report import rich_table, tables
    from trainer.experiments.run import run_experiment

    settings = ctx.find_root().obj
    with Progress(SpinnerColumn(), TextColumn(f"{name}: {{task.completed:,.0f}} examples trained"),
                  TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(name, total=None)
        try:
            result, md = run_experiment(name, settings, quick, out, lambda n: bar.advance(task, n))
        except ValueError as e:
            typer.secho(str(e), fg="red", err=True)
            raise typer.Exit(2) from None
    console = Console()
    for title, (head, rows) in tables(result):
        console.print(rich_table(title, head, rows))
    console.print(f"report: {md} (plot.png, report.json beside it)")


@app.command("collisionless")
def collisionless(ctx: typer.Context, quick: Quick = False, out: Out = None) -> None:
    """DeepFM on the collisionless table vs hashed tables at the paper's collision rates (users 7.73 %,
    items 2.86 %, measured and printed); test AUC per epoch over 5 seeds with 95 % CIs (paper Fig. 7).

    Settings: section experiments.collisionless (seeds, epochs, test_share, limit, targets, slots);
    the model's are those of section trainer. About 3 min of CPU with the defaults (7 min wall on
    2 busy shared cores).
    """
    _run(ctx, "collisionless", quick, out)


@app.command("sync-interval")
def sync_interval(ctx: typer.Context, quick: Quick = False, out: Out = None) -> None:
    """Serving AUC when the serving model is synced every T of event time, against a batch-only model
    (paper Table 2): MovieLens ratings replayed by timestamp, each scored by serving before it is learned.

    Settings: section experiments.sync_interval (seeds, batch_share, intervals_s, paper_intervals_s ...).
    About 4 min of CPU with the defaults (12 min wall on 2 busy shared cores).
    """
    _run(ctx, "sync-interval", quick, out)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="experiment")
