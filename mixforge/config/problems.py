"""Validation problems as lines a user can act on: where (line, field), what, and the bad value."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from mixforge.config.yaml_text import shorten


def error_lines(error: ValidationError, root: yaml.Node | None = None) -> list[str]:
    """One line per problem: [line N, ]field `a.b.c`: message (got value, cut to 200 characters)."""
    lines = []
    for err in error.errors():
        loc = [p for p in err["loc"] if not str(p).startswith("function-after")]
        field = shorten(".".join(str(p) for p in loc), 200) or "(top level)"
        line = line_of(root, loc) if root is not None else None
        where = f"line {line}, " if line else ""
        value = "" if err["type"] == "missing" else f" (got {shorten(repr(err.get('input')))})"
        msg = "unknown key" if err["type"] == "extra_forbidden" else shorten(err["msg"], 400)
        lines.append(f"{where}field `{field}`: {msg}{value}")
    return lines


def line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """1-based line of the YAML node at `loc`, or of its nearest existing parent."""
    best = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(key)), None)
            if match is None:
                key_node = next((k for k, _ in node.value if k.value == str(key)), None)
                return key_node.start_mark.line + 1 if key_node else best
            node = match
        elif isinstance(node, yaml.SequenceNode) and str(key).isdigit() and int(key) < len(node.value):
            node = node.value[int(key)]
        else:
            break
        best = node.start_mark.line + 1
    return best
