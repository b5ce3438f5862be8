"""The program: the Typer app every command registers on, `main` (argv rewriting, errors as one
`error: ...` line, Ctrl-C and SIGTERM), and what several command groups share (numeric bounds,
Prefect's quiet mode)."""

from __future__ import annotations

import os
import signal
import sys

import typer
from rich.console import Console

from mixforge.errors import MixforgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Filter, deduplicate and mix pretraining data.")
console = Console(stderr=True, soft_wrap=True)  # never break paths in messages
# Bounds of numeric options: past them a value is a typo (nan, inf and overflow included), refused
# as a usage error naming the option before any work starts.
MAX_SEED, MAX_RUNS, MAX_TOKENS = 2**32 - 1, 100_000, 10**15


def positive_float(value):
    """Callback of float options: 0 or less (a cap of 0 epochs), nan and inf mean nothing."""
    if value is not None and not 0 < value <= 1e6:
        raise typer.BadParameter(f"{value}: expected a number above 0 and at most 1e6")
    return value


def main() -> None:
    import warnings

    # user-facing warnings (e.g. weights normalised) as one line, not with a source excerpt
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    signal.signal(signal.SIGTERM, _terminated)  # `kill PID` unwinds like Ctrl-C: pools, servers, children stop
    # `mixforge search CONFIG ...` runs a search; `search fit` and `search verify` are subcommands
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "search" and args[1] not in ("run", "fit", "verify", "--help", "-h"):
        args = ["search", "run"] + args[1:]
    try:
        code = app(args, prog_name="mixforge", standalone_mode=False)  # click returns typer.Exit's code instead of exiting
        if code == 130:  # typer turns Ctrl-C (and SIGTERM, see _terminated) into exit code 130
            console.print("interrupted: rerun the same command to resume where it stopped")
        if isinstance(code, int) and code:
            sys.exit(code)
    except MixforgeError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: rerun the same command to resume where it stopped")
        sys.exit(130)
    except (typer.Abort, typer.Exit) as e:
        sys.exit(getattr(e, "exit_code", 1))
    except typer.TyperException as e:  # usage errors: typer raises its own (vendored) click classes, exit code 2
        e.show() if hasattr(e, "show") else console.print(f"[bold red]error:[/] {e.format_message()}", highlight=False)
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors (a typer that uses click itself) carry their own exit code
        _unexpected(e)


def _unexpected(e: Exception) -> None:
    """Exit for what `main` caught last: click's usage errors, Ctrl-C seen through Prefect, a full
    disk or read-only folder; anything else is a bug and keeps its traceback."""
    import click

    from mixforge.write_errors import write_error

    if isinstance(e, click.ClickException):
        e.show()
        sys.exit(e.exit_code)
    if _interrupted(e):  # Ctrl-C also stopped Prefect's temporary server: reporting the crash to it failed
        console.print("interrupted: rerun the same command to resume where it stopped")
        sys.exit(130)
    if (err := write_error(e, None)) is not None:  # a full disk or a read-only folder, wrapped or not
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)
    raise  # called inside main's except: the original traceback


def _interrupted(e: BaseException | None) -> bool:
    """Whether `e` was raised while handling a KeyboardInterrupt (Ctrl-C or SIGTERM)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise KeyboardInterrupt


def quiet_prefect(verbose: bool) -> None:
    """Prefect's run logs (and the tracebacks it logs for failed tasks) stay out of the terminal
    unless --verbose; mixforge prints its own progress and errors."""
    if not verbose:
        os.environ["PREFECT_LOGGING_LEVEL"] = "CRITICAL"
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not os.environ.get("PREFECT_API_URL"):
        # Prefect's temporary server is in this command's process group, so Ctrl-C stops it too; the
        # run's crash report would then retry the dead server for a minute (2+4+...+32 s) per request
        os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "2")
