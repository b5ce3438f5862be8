"""Reading a user's YAML (configs, mixture files) so that no file can make loading explode or
silently lose a value: aliases (a "billion laughs" bomb expands to gigabytes once validated),
keys given twice (YAML keeps the last without a word), nesting deeper than any setting needs,
integers beyond 64 bits. Each is a ConfigError naming the file and line. libyaml parses when
it is installed (about ten times faster than PyYAML's own parser)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mixforge.errors import ConfigError

MAX_DEPTH = 32  # the deepest setting (sources.N.filters.F.top_n_grams.N.N) is 7 levels down
MAX_INT = 2**63 - 1  # no count, size or seed needs more; bigger ones overflow numpy and torch later
INT_TAG = "tag:yaml.org,2002:int"
MERGE_TAG = "tag:yaml.org,2002:merge"
# UTF-32 before UTF-16: the UTF-32-LE mark starts with the UTF-16-LE one
BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def read_text(path: Path) -> str:
    """A text file's content: UTF-8, or UTF-16/32 with a byte order mark (as some editors save);
    anything else is a ConfigError naming the offset, line and column of the first bad byte."""
    raw = path.read_bytes()
    encoding = next((enc for bom, enc in BOMS if raw.startswith(bom)), "utf-8")
    try:
        return raw.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        name = "UTF-8" if encoding == "utf-8" else encoding.upper().removesuffix("-SIG")
        raise ConfigError(f"{path}: not {name}: byte 0x{raw[e.start]:02x} at byte offset {e.start} (line {line}, "
                          f"column {column}); save the file as UTF-8") from None


def parse_yaml(text: str, path: Path) -> tuple[Any, yaml.Node | None]:
    """(data, root node: for line numbers) of one YAML document; ConfigError when it is not
    valid YAML or holds an alias, a key twice, deep nesting or a huge integer."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check(root, path, loader)
        return loader.construct_document(root), root
    except yaml.reader.ReaderError as e:  # a character YAML forbids: its position, as a line
        line, column = text.count("\n", 0, e.position) + 1, e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        hint = " (NUL bytes: is the file UTF-16 without a byte order mark? save it as UTF-8)" if e.character == 0 else ""
        raise ConfigError(f"{path}: not valid YAML: line {line}, column {column}: character #x{e.character:04x} is not "
                          f"allowed in YAML{hint}") from None
    except yaml.YAMLError as e:
        where = str(e).replace('"<unicode string>"', path.name)  # the file, not the parser's name for its text
        raise ConfigError(f"{path}: not valid YAML: {shorten(where, 600)}") from None
    except RecursionError:  # PyYAML's own parser recurses per level; libyaml stops at 1000 levels itself
        raise ConfigError(f"{path}: not valid YAML: nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _check(root: yaml.Node, path: Path, loader) -> None:
    """Walk the node graph in document order, without recursion: a node reached twice is an alias."""
    seen: set[int] = set()
    todo = [(root, 1, root.start_mark.line + 1)]  # (node, depth, line of the key or list that holds it)
    while todo:
        node, depth, line = todo.pop()
        if id(node) in seen:
            raise ConfigError(f"{path}: line {line}: a YAML alias (*name) repeats a value anchored (&name) on line "
                              f"{node.start_mark.line + 1}; aliases are not supported in this file (they can expand to "
                              "gigabytes): write the value out")
        seen.add(id(node))
        if depth > MAX_DEPTH:
            raise ConfigError(f"{path}: line {line}: nested deeper than {MAX_DEPTH} levels; no setting is that deep")
        if isinstance(node, yaml.ScalarNode):
            _check_scalar(node, path, loader)
        elif isinstance(node, yaml.SequenceNode):
            todo += [(child, depth + 1, node.start_mark.line + 1) for child in reversed(node.value)]
        elif isinstance(node, yaml.MappingNode):
            keys: dict[Any, int] = {}
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != MERGE_TAG:
                    name = _check_scalar(key, path, loader)
                    if name in keys:
                        raise ConfigError(f"{path}: line {key.start_mark.line + 1}: key {shorten(repr(name), 80)} is given "
                                          f"twice (first on line {keys[name]}); YAML would keep only the last: remove one")
                    keys[name] = key.start_mark.line + 1
            for key, value in reversed(node.value):
                todo += [(value, depth + 1, key.start_mark.line + 1), (key, depth + 1, key.start_mark.line + 1)]


def _check_scalar(node: yaml.ScalarNode, path: Path, loader) -> Any:
    """The scalar's value; an integer beyond 64 bits, or a value its tag cannot hold (a date
    2024-13-45), is a ConfigError naming the line."""
    line = node.start_mark.line + 1
    if node.tag == INT_TAG and len(node.value) > 40:  # before int(): Python refuses over 4,300 digits
        raise ConfigError(f"{path}: line {line}: integer {shorten(node.value, 60)} is out of range (at most {MAX_INT:,} in size)")
    try:
        value = loader.construct_object(node)
    except (ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"{path}: line {line}: {shorten(node.value, 80)!r} is not a valid {node.tag.rsplit(':', 1)[-1]}: "
                          f"{shorten(str(e), 200)}") from None
    if node.tag == INT_TAG and abs(value) > MAX_INT:
        raise ConfigError(f"{path}: line {line}: integer {shorten(node.value, 60)} is out of range (at most {MAX_INT:,} in size)")
    return value


def shorten(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters, saying how much was left out (messages stay one paragraph)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"
