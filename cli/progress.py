"""A live progress line on stderr for the long-running commands (join, archive), whose totals are
unknown: a spinner, a count and what the stage reports, refreshed twice a second.

Only on a terminal: in a container or a test, stderr is a log, and the stage's periodic log line
says the same thing once per ``log_interval``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from streamrec.logs import stderr_console

Reading = tuple[int, str]  # (the count that advances, a short status text)


@contextmanager
def live(description: str, read: Callable[[], Reading | None]) -> Iterator[None]:
    """Show ``read()`` (None: nothing to show yet) until the block ends."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = stderr_console()
    if not console.is_terminal:
        yield
        return
    progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                        TextColumn("{task.completed:,.0f}"),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console)
    task = progress.add_task(description, total=None, status="")
    done = threading.Event()

    def refresh() -> None:
        while not done.wait(0.5):
            got = read()
            if got is not None:
                progress.update(task, completed=got[0], status=got[1])

    with progress:
        thread = threading.Thread(target=refresh, name="progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


@contextmanager
def waiting(what: str) -> Iterator[None]:
    """A spinner on stderr while a set-up step waits for daemons (seconds to a minute); terminal only."""
    console = stderr_console()
    if not console.is_terminal:
        yield
        return
    with console.status(what):
        yield
