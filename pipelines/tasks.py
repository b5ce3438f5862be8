"""Multiple-choice evaluation tasks (JSONL lines {"context", "choices", "gold"}), scored by
log-likelihood as lm-evaluation-harness does.

`next_line_task` builds one from real held-out text: the context is a few consecutive lines of a
document, the gold choice is the line that really follows, the distractors are lines of the
same length range taken from documents of other components. A proxy that learned a component's
style and content picks the true line more often."""

from __future__ import annotations

import json
import random
from pathlib import Path

from mixforge.errors import ConfigError

CONTEXT_LINES = 3
MIN_LINE_CHARS = 20


def usable_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if len(line.strip()) >= MIN_LINE_CHARS]


def next_line_task(docs: list[tuple[str, str]], n_items: int = 200, n_choices: int = 4, seed: int = 0) -> list[dict]:
    """Items from (component, text) pairs; deterministic for a seed."""
    rng = random.Random(seed)
    by_comp: dict[str, list[list[str]]] = {}
    for comp, text in docs:
        lines = usable_lines(text)
        if len(lines) > CONTEXT_LINES:
            by_comp.setdefault(comp, []).append(lines)
    pool = [(c, lines) for c, docs_ in sorted(by_comp.items()) for lines in docs_]
    if len(by_comp) < 2:
        return []  # distractors must come from another component
    items = []
    for _ in range(n_items * 5):
        if len(items) == n_items:
            break
        comp, lines = rng.choice(pool)
        i = rng.randrange(len(lines) - CONTEXT_LINES)
        others = [ls for c, ls in pool if c != comp]
        distractors = [rng.choice(rng.choice(others)) for _ in range(n_choices - 1)]
        gold = lines[i + CONTEXT_LINES]
        if gold in distractors:
            continue
        choices = distractors + [gold]
        rng.shuffle(choices)
        items.append({"context": "\n".join(lines[i : i + CONTEXT_LINES]) + "\n", "choices": choices,
                      "gold": choices.index(gold), "component": comp})
    return items


def load_task(path: Path) -> list[dict]:
    """A JSONL task file; a bad line is an error naming the file and line."""
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            ok = (isinstance(item.get("context"), str) and isinstance(item.get("choices"), list) and len(item["choices"]) >= 2
                  and all(isinstance(c, str) for c in item["choices"]) and isinstance(item.get("gold"), int)
                  and 0 <= item["gold"] < len(item["choices"]))
        except (json.JSONDecodeError, AttributeError):
            ok = False
        if not ok:
            raise ConfigError(f"{path}:{n}: expected {{\"context\": str, \"choices\": [str, str, ...], \"gold\": index}}")
        items.append(item)
    return items

