"""`streamrec archive`, `streamrec archive-ls` and `streamrec hdfs up|down|status`.

Registered on the root app by ``cli.main``; heavy imports stay inside the commands.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from cli.preflight import preflight
from cli.progress import live, waiting
from streamrec.errors import CONFIG

hdfs_app = typer.Typer(
    help="A local test HDFS (Hadoop 3 NameNode + DataNode, WebHDFS) on free 127.0.0.1 ports, "
    "run dir <stack.run_dir>/hdfs.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("archive")(archive)
    app.command("archive-ls")(archive_ls)
    app.add_typer(hdfs_app, name="hdfs")


def _settings(ctx: typer.Context):
    return ctx.find_root().obj


def archive(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Option(help="local | hdfs (default: archive.target)")] = None,
    root: Annotated[
        str | None, typer.Option(help="archive root: a directory (local) or an HDFS path (hdfs)")
    ] = None,
    hdfs_url: Annotated[
        str | None, typer.Option(help="WebHDFS URL (default: the HDFS `streamrec hdfs up` started)")
    ] = None,
    stop_when_idle: Annotated[
        float | None, typer.Option(help="commit and exit after this many seconds without new examples")
    ] = None,
    max_seconds: Annotated[float | None, typer.Option(help="commit and exit after this long")] = None,
    roll_age: Annotated[float | None, typer.Option(help="commit at least every this many seconds")] = None,
    roll_mb: Annotated[float | None, typer.Option(help="commit once this many MB are buffered")] = None,
    lateness_ms: Annotated[
        int | None, typer.Option(help="an hour is complete once the watermark passes its end + this")
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(
        help="Prometheus endpoint on metrics.host (0 = a free port; default archive.metrics_port, unset = off)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings only")] = False,
) -> None:
    """Archive the examples topic as Parquet under examples/dt=YYYY-MM-DD/hour=HH/, exactly once.

    Offsets are stored with each commit in the archive, so a restart (even after kill -9) resumes
    where the last commit ended; duplicates by example_id are dropped; _SUCCESS marks an hour once
    the watermark is past it plus the allowed lateness; later examples go to late-*.parquet files.
    If the target is down the dumper retries with back-off until it is back. Ctrl-C / SIGTERM
    commit what was read and exit.
    """
    from rich.console import Console

    s = _settings(ctx)
    a = s.archive
    try:
        if target is not None:
            a.target = target
        if root is not None:
            if a.target == "hdfs":
                a.hdfs_root = root
            else:
                a.root = Path(root)
        for field, value in (("hdfs_url", hdfs_url), ("roll_age_s", roll_age),
                             ("allowed_lateness_ms", lateness_ms)):
            if value is not None:
                setattr(a, field, value)
        if roll_mb is not None:
            a.roll_bytes = int(roll_mb * (1 << 20))
        if metrics_port is not None:
            a.metrics_port = metrics_port
    except ValueError as e:
        typer.secho(f"invalid option: {e}", fg="red", err=True)
        raise typer.Exit(CONFIG) from None
    console = Console(stderr=True)
    if quiet:
        logging.getLogger().setLevel(logging.WARNING)
    preflight(s, ["examples"])
    from sinks.archive import Archiver

    try:
        arch = Archiver(s)
    except ValueError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(CONFIG) from None
    if a.metrics_port is not None:
        from streamrec.metrics import serve_metrics

        serve_metrics(a.metrics_port, s.metrics.host, health=lambda: not arch.stopping)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: arch.stop())
    with live("archive", lambda: (arch.stats.archived, f"examples committed; {arch.stats.commits} commits")):
        st = arch.run(idle_s=stop_when_idle, max_s=max_seconds)
    console.print(
        f"archived {st.archived:,} examples ({st.late:,} late), dropped {st.duplicates:,} duplicates, "
        f"{st.dead_letters:,} dead letters; {st.commits} commits, {st.files} files; "
        f"target errors {st.target_errors} in {st.outages} outages ({st.outage_s:.1f}s)"
    )


def archive_ls(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Option(help="local | hdfs (default: archive.target)")] = None,
) -> None:
    """List the archive's hours: files, rows, complete (_SUCCESS) or not."""
    from rich.console import Console
    from rich.table import Table

    from sinks import layout
    from sinks.reader import open_archive

    s = _settings(ctx)
    if target is not None:
        s.archive.target = target
    r = open_archive(s)
    table = Table("hour (UTC)", "files", "late files", "rows", "complete", title=r.fs.description)
    for h in r.hours():
        files = r.files(h)
        late = sum("/late-" in f for f in files)
        table.add_row(layout.hour_label(h), str(len(files) - late), str(late), f"{r.count(h, h + 1):,}",
                      "yes" if r.is_complete(h) else "no")
    Console().print(table)


def _hdfs_dir(ctx: typer.Context) -> Path:
    return Path(_settings(ctx).stack.run_dir) / "hdfs"


@hdfs_app.command("up")
def hdfs_up(ctx: typer.Context) -> None:
    """Start NameNode + DataNode (formatted at first start; ports kept in the run dir)."""
    from deploy.hdfs import up

    with waiting("starting the HDFS NameNode and DataNode"):
        h = up(_hdfs_dir(ctx))
    typer.echo(f"hdfs up: WebHDFS {h.url}, {h.fs_uri}, run dir {h.run_dir}")


@hdfs_app.command("down")
def hdfs_down(ctx: typer.Context) -> None:
    """Stop the daemons `hdfs up` started (by their pid files); data stays for the next `up`."""
    from deploy.hdfs import down

    typer.echo("hdfs stopped" if down(_hdfs_dir(ctx)) else "hdfs was not running")


@hdfs_app.command("status")
def hdfs_status(ctx: typer.Context) -> None:
    """Whether the daemons run and HDFS is ready (live DataNode, safe mode off)."""
    from deploy.hdfs import Hdfs

    d = _hdfs_dir(ctx)
    if not (d / "ports.json").exists():
        typer.echo("hdfs: never started (make hdfs-up)")
        return
    h = Hdfs(d)
    typer.echo(f"hdfs: namenode {'up' if h.running('namenode') else 'down'}, "
               f"datanode {'up' if h.running('datanode') else 'down'}, "
               f"{'ready' if h.ready() else 'not ready'} at {h.url}")
