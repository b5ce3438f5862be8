"""One progress-bar style for every long stage: count, bar, rate, elapsed (on stderr)."""

from __future__ import annotations

import os


def progress_bar():
    """A Rich Progress whose tasks carry a `rate` field; MIXFORGE_PROGRESS=0 hides it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),  # stdout stays for results
        disable=os.environ.get("MIXFORGE_PROGRESS", "1") == "0",
    )


def progress_lines():
    """A `say(line)` that prints one line per phase of a long command on stderr (stdout stays for
    results); MIXFORGE_PROGRESS=0 hides them, as it hides the bars."""
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True, highlight=False)
    if os.environ.get("MIXFORGE_PROGRESS", "1") == "0":
        return lambda line: None
    return lambda line: console.print(line, markup=False)
