"""The built-in demo corpus (real text from Debian and Python packages, see
data_cards/demo_corpus.md) and its config."""

from __future__ import annotations

from pathlib import Path

import yaml

from mixforge.workspace import atomic_write_text

DEMO_DIR = Path(__file__).parent


def write_demo_config(workspace: Path) -> Path:
    """Write `<workspace>/demo.yaml`: the packaged demo config with absolute corpus paths."""
    workspace = workspace.resolve()
    data = yaml.safe_load((DEMO_DIR / "demo.yaml").read_text())
    data["workspace"] = str(workspace)
    for source in data["sources"]:
        source["path"] = str(DEMO_DIR / source["path"])
    data["quality"]["reference"] = [str(DEMO_DIR / r) for r in data["quality"]["reference"]]
    data["proxy"]["eval_texts"] = [str(DEMO_DIR / r) for r in data["proxy"].get("eval_texts", [])]
    path = workspace / "demo.yaml"
    atomic_write_text(path, "# written by `mixforge build --demo` from mixforge/demo/demo.yaml\n" + yaml.safe_dump(data, sort_keys=False))
    return path
