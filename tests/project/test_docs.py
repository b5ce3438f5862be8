"""The documentation: docs/ builds with mkdocs in strict mode (no warnings, no broken links or
anchors), its generated pages equal what scripts/gen_docs.py writes from the code, and the
README's links into the repository resolve."""

import importlib.util
import re
import subprocess
import sys

import pytest

from conftest import ROOT


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_docs_build_strict(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=100, cwd=ROOT,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "WARNING" not in log, log
    assert (tmp_path / "site" / "cli" / "index.html").exists()


@pytest.mark.timeout(60)
def test_every_page_is_in_the_nav():
    import yaml

    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    listed = {page for entry in nav for page in entry.values()}
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk <= listed, f"pages missing from mkdocs.yml's nav: {sorted(on_disk - listed)}"


@pytest.mark.timeout(60)
def test_cli_reference_is_current():
    expected = _gen_docs().cli_reference()
    assert (ROOT / "docs" / "cli.md").read_text() == expected, "run: .venv/bin/python scripts/gen_docs.py"


@pytest.mark.timeout(60)
def test_config_reference_is_current():
    page = (ROOT / "docs" / "config.md").read_text()
    assert page == _gen_docs().config_page(page), "run: .venv/bin/python scripts/gen_docs.py"


@pytest.mark.timeout(60)
def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert any(t.startswith("docs/") for t in local)
    missing = [t for t in local if t and not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
