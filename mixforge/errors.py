"""Errors a user can cause. The CLI prints them as one clear message, never a traceback."""


class MixforgeError(Exception):
    """A mistake in the user's input or config: the message says what and where."""


class ConfigError(MixforgeError):
    """The config file is invalid; the message names the file, line, field and bad value."""


class InputError(MixforgeError):
    """A source record or file is unusable (raised under --strict, otherwise counted in the ledger)."""


class LedgerError(MixforgeError):
    """A stage's counts do not add up: documents in != out + removed."""


def first_few(items: list[str], show: int = 5, sep: str = "; ") -> str:
    """The first `show` items joined, and how many more there are: a message stays one paragraph."""
    return sep.join(items[:show]) + (f"{sep}and {len(items) - show} more" if len(items) > show else "")
