"""mkdocs hook (mkdocs.yml `hooks:`): BENCHMARKS.md stays at the repository root, where GitHub shows
it and the docs pages link to it as ../BENCHMARKS.md; the site gets it as the page
benchmarks-all.md, and those links are pointed there, so that they resolve in both places and
`mkdocs build --strict` still checks them."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

PAGE = "benchmarks-all.md"


def on_files(files, config):
    root = Path(config.config_file_path).parent
    files.append(File.generated(config, PAGE, abs_src_path=str(root / "BENCHMARKS.md")))
    return files


def on_page_markdown(markdown, page, config, files):
    return markdown.replace("](../BENCHMARKS.md", f"]({PAGE}")
