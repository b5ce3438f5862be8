"""Templates of the data cards mixforge writes (Jinja2, rendered by `render`). The folder also
holds the hand-written card of the demo corpus (demo_corpus.md)."""

from __future__ import annotations

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent


def render(name: str, **context) -> str:
    """The template `name` (e.g. "export_card.md.jinja") filled with `context`."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda x: f"{x:,}"
    return env.get_template(name).render(**context)
