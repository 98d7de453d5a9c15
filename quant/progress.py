"""Progress display for long quantization runs: a rich bar on a terminal, silence otherwise."""

import sys
from contextlib import contextmanager


@contextmanager
def progress(total, description, enabled=None):
    """Yield `advance(n)`; shows a rich progress bar on stderr when it is a TTY (or `enabled`)."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
