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

import numpy as np

from mixforge.errors import ConfigError
from mixforge.pipelines.samples import BottomK

CONTEXT_LINES = 3
MIN_LINE_CHARS = 20


def usable_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if len(line.strip()) >= MIN_LINE_CHARS]


TASK_DOCS_PER_COMPONENT = 2000  # held-out documents per component the task draws from (seeded sample)


class NextLinePool:
    """Held-out documents' usable lines per component, a seeded sample of at most
    `per_component` documents each (smallest keys), so memory does not grow with the corpus."""

    def __init__(self, per_component: int = TASK_DOCS_PER_COMPONENT):
        self.per_component = per_component
        self.by_comp: dict[str, BottomK] = {}

    def add(self, comp: str, keys: np.ndarray, texts: list[str]) -> None:
        kept = [(k, lines) for k, lines in zip(keys, map(usable_lines, texts)) if len(lines) > CONTEXT_LINES]
        if kept:
            self.by_comp.setdefault(comp, BottomK(self.per_component)).offer(np.array([k for k, _ in kept], np.uint64), [ls for _, ls in kept])

    def merge(self, other: "NextLinePool") -> None:
        """Offer `other`'s sample after what this pool was offered: the pool of the documents of
        both, in that order (the smallest keys of all are among each part's smallest)."""
        for comp, sample in other.by_comp.items():
            self.by_comp.setdefault(comp, BottomK(self.per_component)).merge(sample)

    def items(self, n_items: int = 200, n_choices: int = 4, seed: int = 0) -> list[dict]:
        """Deterministic for a seed; linear in the pool (distractor documents are drawn by index
        from the pool without the item's own component, never by building that list)."""
        rng = random.Random(seed)
        if len(self.by_comp) < 2:
            return []  # distractors must come from another component
        pool, spans = [], {}
        for c in sorted(self.by_comp):
            docs = self.by_comp[c].items()
            spans[c] = (len(pool), len(pool) + len(docs))
            pool += [(c, lines) for lines in docs]
        items = []
        for _ in range(n_items * 5):
            if len(items) == n_items:
                break
            comp, lines = rng.choice(pool)
            i = rng.randrange(len(lines) - CONTEXT_LINES)
            start, end = spans[comp]
            distractors = []
            for _ in range(n_choices - 1):
                j = rng.randrange(len(pool) - (end - start))
                distractors.append(rng.choice(pool[j if j < start else j + end - start][1]))
            gold = lines[i + CONTEXT_LINES]
            if gold in distractors:
                continue
            choices = distractors + [gold]
            rng.shuffle(choices)
            items.append({"context": "\n".join(lines[i : i + CONTEXT_LINES]) + "\n", "choices": choices,
                          "gold": choices.index(gold), "component": comp})
        return items


def next_line_task(docs: list[tuple[str, str]], n_items: int = 200, n_choices: int = 4, seed: int = 0) -> list[dict]:
    """Items from (component, text) pairs (the first TASK_DOCS_PER_COMPONENT usable documents of
    each component); deterministic for a seed."""
    pool = NextLinePool()
    for n, (comp, text) in enumerate(docs):
        pool.add(comp, np.array([n], np.uint64), [text])
    return pool.items(n_items, n_choices, seed)


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

