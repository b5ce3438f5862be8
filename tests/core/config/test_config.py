from pathlib import Path

import pytest

from mixforge.config import MixforgeConfig, SourceConfig, load_config
from mixforge.config.template import default_config, render_config
from mixforge.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_line_and_field(tmp_path):
    path = _write(tmp_path, "sources:\n  - path: a.jsonl\nfilters:\n  gopher_quality:\n    min_doc_wrods: 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "line 5" in msg
    assert "filters.gopher_quality.min_doc_wrods" in msg
    assert "unknown key" in msg


def test_bad_value_is_named_with_the_value(tmp_path):
    path = _write(tmp_path, "sources:\n  - path: a.jsonl\n    kind: poetry\nworkers: -3\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "sources.0.kind" in msg and "'poetry'" in msg and "line 3" in msg
    assert "`workers`" in msg and "-3" in msg


def test_missing_sources_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="field `sources`"):
        load_config(_write(tmp_path, "seed: 1\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "sources: [\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_label_and_label_field_are_exclusive(tmp_path):
    with pytest.raises(ConfigError, match="either `label` or `label_field`"):
        load_config(_write(tmp_path, "sources:\n  - {path: a.jsonl, label: x, label_field: y}\n"))


def test_code_sources_skip_prose_filters_unless_turned_back_on(tmp_path):
    cfg = load_config(
        _write(
            tmp_path,
            "sources:\n  - {path: a.jsonl, kind: code}\n"
            "  - {path: b.jsonl, kind: code, filters: {gopher_repetition: {enabled: true, dup_line_frac: 0.5}}}\n"
            "  - {path: c.jsonl}\n",
        )
    )
    code, code_rep, prose = (cfg.source_filters(s) for s in cfg.sources)
    assert not code.gopher_quality.enabled and not code.c4_quality.enabled and not code.language.enabled
    assert code.length.enabled
    assert code_rep.gopher_repetition.enabled and code_rep.gopher_repetition.dup_line_frac == 0.5
    assert prose.gopher_quality.enabled and prose.fineweb_quality.enabled


def test_per_source_override_is_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg.yaml: sources.0.filters: .*a.jsonl.*min_chars"):
        load_config(_write(tmp_path, "sources:\n  - {path: a.jsonl, filters: {length: {min_chars: many}}}\n"))
    with pytest.raises(ConfigError, match="unknown filter 'spelling'"):
        load_config(_write(tmp_path, "sources:\n  - {path: a.jsonl, filters: {spelling: {}}}\n"))


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "cfg.yaml"
    path.write_text("workspace: ws\nsources:\n  - path: data/a.jsonl\n")
    cfg = load_config(path)
    assert cfg.workspace_dir == tmp_path / "sub" / "ws"
    assert cfg.resolve(cfg.sources[0].path) == tmp_path / "sub" / "data" / "a.jsonl"


def test_rendered_default_config_is_commented_and_round_trips(tmp_path):
    cfg = default_config([str(tmp_path / "a.jsonl"), "b/"], "./work", label_field="domain", base=tmp_path)
    text = render_config(cfg)
    # every field is documented in the file it writes
    assert "# Gopher repetition rules." in text and "# Minimum words per document." in text
    for section in ("embed:", "cluster:", "quality:", "proxy:", "search:", "export:"):
        assert section in text
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    loaded = load_config(path)
    assert loaded.model_dump() == cfg.model_dump()
    assert loaded.sources[0].path == "a.jsonl"  # made relative to the config's folder
    assert loaded.sources[1].label_field == "domain"


def test_every_field_has_a_description():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, MixforgeConfig.__mro__[1]):
                walk(ann)

    walk(MixforgeConfig)
    walk(SourceConfig)
