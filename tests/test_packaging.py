"""The distribution: one wheel holding every subpackage and the demo data; import rules."""

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

SUBPACKAGES = ["mixforge", "mixforge/cli", "mixforge/pipelines", "mixforge/mixers", "mixforge/proxy_training", "mixforge/flows",
               "mixforge/demo"]


@pytest.mark.timeout(300)
def test_wheel_contains_every_subpackage_and_the_demo(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, timeout=240, capture_output=True,
    )
    (wheel,) = tmp_path.glob("mixforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in SUBPACKAGES:
        assert f"{pkg}/__init__.py" in names, pkg
    assert "mixforge/pipelines/ingest.py" in names and "mixforge/flows/build.py" in names
    assert "mixforge/demo/demo.yaml" in names and "mixforge/schemas/manifest-v1.json" in names
    assert "mixforge/data_cards/export_card.md.jinja" in names
    corpus = [n for n in names if n.startswith("mixforge/demo/corpus/") and n.endswith(".jsonl.zst")]
    assert len(corpus) >= 6
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mixforge = mixforge.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0] if not node.module.startswith("mixforge.") else node.module)
    return found


def test_import_rules():
    """prefect only in flows/, typer only in mixforge/cli/, and dependencies point one way:
    core <- pipelines <- proxy_training <- mixers <- flows <- cli."""
    layers = {"mixforge": 0, "pipelines": 1, "proxy_training": 2, "mixers": 3, "flows": 4}
    above = layers | {"cli": 5}  # the CLI sits on top of every layer: nothing below imports it
    for folder, level in layers.items():
        for path in (ROOT / folder).rglob("*.py"):
            imports = _imports(path)
            rel = path.relative_to(ROOT).as_posix()
            in_cli = rel.startswith("mixforge/cli/")
            level = above["cli"] if in_cli else layers[folder]
            if folder != "flows":
                assert "prefect" not in imports, f"{rel} imports prefect"
            if not in_cli:
                assert "typer" not in imports, f"{rel} imports typer"
            for mod in imports:
                if mod.startswith("mixforge."):
                    target = mod.split(".")[1]
                    assert above.get(target, 0) <= level, f"{rel} imports {mod} (a higher layer)"


def test_help_does_not_load_heavy_libraries():
    code = (
        "import sys\n"
        "from mixforge.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'faiss', 'prefect', 'datatrove', 'polars', 'sentence_transformers') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "build" in run.stdout and "status" in run.stdout and "init" in run.stdout
    assert "HEAVY []" in run.stdout


def test_demo_corpus_is_real_multi_domain_and_large_enough():
    from mixforge.demo import DEMO_DIR

    provenance = json.loads((DEMO_DIR / "corpus" / "PROVENANCE.json").read_text())
    labels = provenance["labels"]
    assert len(labels) >= 6
    assert sum(v["characters"] for v in labels.values()) >= 5_000_000
    for label, info in labels.items():
        assert info["licence"] and info["origins"], label
        assert (DEMO_DIR / "corpus" / f"{label}.jsonl.zst").exists()
    assert (ROOT / "data_cards" / "demo_corpus.md").exists()


def test_readme_has_the_two_commands():
    """The config reference moved to docs/config.md (tests/test_docs.py checks it is current)."""
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
