"""The distribution: one wheel holding every subpackage and the demo data; import rules."""

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

SUBPACKAGES = ["mixforge", "mixforge/cli", "mixforge/config", "mixforge/pipelines", "mixforge/mixers", "mixforge/proxy_training",
               "mixforge/flows", "mixforge/demo"] + [f"mixforge/pipelines/{p.name}" for p in sorted((ROOT / "pipelines").iterdir())
                                                     if (p / "__init__.py").exists()]


@pytest.mark.timeout(300)
def test_wheel_contains_every_subpackage_and_the_demo(tmp_path):
    # built from a copy: setuptools builds in the tree, and a build/ left by an earlier layout leaks stale modules
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "mixforge-demo", "mixforge-work", "site", "out"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
        check=True, timeout=240, capture_output=True,
    )
    (wheel,) = tmp_path.glob("mixforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {n for n in names if n.endswith(".py")}
    assert modules == {f"mixforge/{p}" for p in _package_modules()}, "the wheel's modules are the source tree's"
    for pkg in SUBPACKAGES:
        assert f"{pkg}/__init__.py" in names, pkg
    assert "mixforge/pipelines/ingest/stage.py" in names and "mixforge/flows/build.py" in names
    assert "mixforge/demo/demo.yaml" in names and "mixforge/schemas/manifest-v1.json" in names
    assert "mixforge/data_cards/export_card.md.jinja" in names
    corpus = [n for n in names if n.startswith("mixforge/demo/corpus/") and n.endswith(".jsonl.zst")]
    assert len(corpus) >= 6
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mixforge = mixforge.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _package_modules() -> set[str]:
    """Every source module, as its path inside the installed package (pyproject's package-dir)."""
    return {("" if folder == "mixforge" else folder + "/") + str(path.relative_to(ROOT / folder))
            for folder in ("mixforge", "pipelines", "mixers", "proxy_training", "flows", "data_cards")
            for path in (ROOT / folder).rglob("*.py") if "__pycache__" not in path.parts}


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


PACKAGE_DIRS = {"mixforge.pipelines": "pipelines", "mixforge.mixers": "mixers", "mixforge.proxy_training": "proxy_training",
                "mixforge.flows": "flows", "mixforge.data_cards": "data_cards", "mixforge": "mixforge"}


def _module_file(module: str) -> Path | None:
    """The file of a mixforge module (package: its __init__), through pyproject's package-dir."""
    prefix = next(p for p in PACKAGE_DIRS if module == p or module.startswith(p + "."))
    base = ROOT / PACKAGE_DIRS[prefix]
    if module != prefix:
        base = base / Path(*module[len(prefix) + 1:].split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_graph() -> dict[str, set[str]]:
    """Every mixforge module -> the mixforge modules it imports (function-level imports included;
    `from a import b` counts as importing a.b where b is a module)."""
    graph: dict[str, set[str]] = {}
    for folder, package in (("mixforge", "mixforge"), ("pipelines", "mixforge.pipelines"), ("proxy_training", "mixforge.proxy_training"),
                            ("mixers", "mixforge.mixers"), ("flows", "mixforge.flows")):
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts)))
            edges = set()
            tree = ast.parse(path.read_text())
            typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                           for stmt in block.body for n in ast.walk(stmt)}  # never run: not an import
            for node in ast.walk(tree):
                if id(node) in typing_only:
                    continue
                if isinstance(node, ast.Import):
                    edges |= {a.name for a in node.names if a.name.startswith("mixforge.")}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mixforge"):
                    submodules = {f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}")}
                    edges |= submodules  # `from package import module` reads the module, not the package's names
                    if len(submodules) < len(node.names):
                        edges.add(node.module)
            graph[name] = {e for e in edges if _module_file(e) and e != name}
    return graph


def test_no_import_circles():
    """No module reaches itself through the modules it imports (lazy imports included)."""
    graph = _module_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circle = path[path.index(target):] + [target]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


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
    """The config reference moved to docs/config.md (tests/project/test_docs.py checks it is current)."""
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
