"""Writes the generated pages of docs/: the CLI reference (docs/cli.md, from the Typer app) and the
config reference (the block in docs/config.md, from the config models). tests/project/test_docs.py checks
that the committed pages equal what this writes, so after changing a command or a config field run:

    .venv/bin/python scripts/gen_docs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_PAGE = ROOT / "docs" / "cli.md"
CONFIG_PAGE = ROOT / "docs" / "config.md"
START, END = "<!-- config-reference:start -->\n", "\n<!-- config-reference:end -->"

CLI_HEADER = """\
# CLI reference

Generated from the commands' own help by `scripts/gen_docs.py` (do not edit by hand; a test
checks it is current). `mixforge COMMAND --help` prints the same; every command takes `--help`.
"""


def _escape(line: str) -> str:
    """`<` outside code spans escaped, so that a placeholder such as <workspace> is shown rather
    than read as an HTML tag."""
    parts = line.split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def _cell(text: str) -> str:
    """One table cell: one line, pipes and placeholders escaped."""
    return _escape(" ".join(str(text).split()).replace("|", "\\|"))


def _default(param) -> str:
    if param.required:
        return "required"
    default = param.default
    if callable(default) or default is None or default == () or default == []:
        return ""
    if param.is_flag and default is False:
        return ""
    return f"`{_cell(default)}`"


def _command_section(cmd, ctx, path: list[str]) -> list[str]:
    """One command: heading, usage, help, then its arguments and options as a table."""
    lines = [f"## `{' '.join(path)}`", ""]
    usage = " ".join([" ".join(path), *cmd.collect_usage_pieces(ctx)])
    lines += ["```", usage, "```", ""]
    if cmd.help:
        lines += [" ".join(cmd.help.split()), ""]
    params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False) and p.name != "help"]
    if params:
        lines += ["| argument / option | default | meaning |", "|---|---|---|"]
        for p in params:
            if p.param_type_name == "argument":
                name = f"`{p.name.upper()}`"
            else:
                names = list(p.opts) + list(p.secondary_opts)
                name = " / ".join(f"`{n}`" for n in names)
            lines.append(f"| {name} | {_default(p)} | {_cell(getattr(p, 'help', None) or '')} |")
        lines.append("")
    return lines


def cli_reference() -> str:
    """Markdown for every command and subcommand of `mixforge`, in the order `--help` lists them."""
    import typer

    from mixforge.cli import app

    root = typer.main.get_command(app)
    out = [CLI_HEADER]

    def walk(cmd, ctx, path: list[str]) -> None:
        out.extend(_command_section(cmd, ctx, path))
        if hasattr(cmd, "list_commands"):  # a group (typer vendors click: no isinstance on click.Group)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not getattr(sub, "hidden", False):
                    walk(sub, sub.context_class(sub, parent=ctx, info_name=name), [*path, name])

    walk(root, root.context_class(root, info_name="mixforge"), ["mixforge"])
    return "\n".join(out).rstrip("\n") + "\n"


def config_page(current: str) -> str:
    """docs/config.md with its generated block replaced by the models' reference."""
    from mixforge.config.template import config_reference

    head, rest = current.split(START, 1)
    tail = rest.split(END, 1)[1]
    block = "\n".join(_escape(line) for line in config_reference().split("\n"))
    return head + START + block + END + tail


def main() -> None:
    from mixforge.workspace import atomic_write_text

    atomic_write_text(CLI_PAGE, cli_reference())
    atomic_write_text(CONFIG_PAGE, config_page(CONFIG_PAGE.read_text()))
    print(f"wrote {CLI_PAGE.relative_to(ROOT)} and {CONFIG_PAGE.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
