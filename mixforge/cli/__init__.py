"""The `mixforge` command line (Typer, the only importer of typer). Heavy libraries (torch,
datatrove, prefect) load inside the commands that need them, so `mixforge --help` stays instant.

program.py holds the app and `main` (errors, signals); build.py the build and data commands,
search.py the proxy and search commands, export.py export, verify and deploy; tables.py what
they print. Each command parses its options, calls one function below the CLI, and prints.
"""

from mixforge.cli.program import app, main
from mixforge.cli import build, search, export  # noqa: F401, E402  (their commands register on `app`, in this order)

__all__ = ["app", "main"]
