"""Writes a config as commented YAML: every key preceded by its field description, so the
file `mixforge init` writes documents itself and stays in step with the models."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel

from mixforge.config import MixforgeConfig, SourceConfig

HEADER = """\
# mixforge config. Reference: docs/config.md.
# Relative paths are relative to this file. Unknown keys are errors.
"""


def render_config(cfg: MixforgeConfig, source_notes: dict[int, dict[str, str]] | None = None) -> str:
    """`source_notes`: {source index: {key: comment}}, written after that key (init's evidence)."""
    return HEADER + "\n".join(_render_model(cfg, indent=0, notes=source_notes or {})) + "\n"


def _scalar(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()


def _render_model(model: BaseModel, indent: int, comments: bool = True, notes: dict | None = None) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if comments and field.description:
            lines.append(f"{pad}# {field.description}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines += _render_model(value, indent + 2, comments)
        elif name == "sources":
            lines.append(f"{pad}{name}:")
            for i, source in enumerate(value):
                body = _render_model(source, indent + 4, comments=comments and i == 0)
                for key, note in (notes or {}).get(i, {}).items():
                    body = [f"{line}  # {note}" if line.lstrip().startswith(f"{key}:") else line for line in body]
                first = next(k for k, line in enumerate(body) if not line.lstrip().startswith("#"))
                body[first] = f"{pad}  - " + body[first].lstrip()
                lines += body
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")
    return lines


def default_config(sources: list[str], workspace: str, label_field: str | None = None, base: Path | None = None) -> MixforgeConfig:
    """The config `mixforge init` writes: defaults, with the given sources (paths kept as typed,
    relative to `base` when they lie under it)."""
    entries = []
    for s in sources:
        path = Path(s)
        if base is not None and path.is_absolute() and path.is_relative_to(base):
            path = path.relative_to(base)
        entries.append(SourceConfig(path=str(path), label_field=label_field))
    return MixforgeConfig(workspace=workspace, sources=entries)


def config_reference() -> str:
    """Markdown tables of every config key with its default and description (for docs/config.md,
    written by scripts/gen_docs.py; a test keeps the page in step with the models)."""
    out: list[str] = []

    def table(title: str, model_cls: type[BaseModel], instance: BaseModel | None) -> None:
        out.append(f"**`{title}`**: {(model_cls.__doc__ or '').strip().splitlines()[0]}\n")
        out.append("| key | default | meaning |\n|---|---|---|")
        nested = []
        for name, field in model_cls.model_fields.items():
            value = getattr(instance, name) if instance is not None else field.get_default(call_default_factory=True)
            if isinstance(value, BaseModel):
                nested.append((f"{title}.{name}" if title != "(top level)" else name, type(value), value))
                out.append(f"| `{name}` | see below | {field.description} |")
                continue
            default = "required" if field.is_required() else f"`{_scalar(value)}`"
            out.append(f"| `{name}` | {default} | {field.description} |")
        out.append("")
        for args in nested:
            table(*args)

    table("(top level)", MixforgeConfig, MixforgeConfig(sources=[SourceConfig(path="x")]))
    table("sources[]", SourceConfig, None)
    return "\n".join(out)
