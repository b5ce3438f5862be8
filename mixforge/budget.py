"""How many components and how many proxy runs: the defaults that fit a corpus and a search budget.

A predictor needs runs in proportion to the components it weighs (Olmix: the swarm must grow
O(m); RegMix used 512 runs for 17 domains). On the demo's 8 components the mixing law ranks
held-out runs at Spearman 0.89 from 24 runs and 0.94 from 40 (BENCHMARKS.md, learning curve), so
`search.runs: auto` trains 6 per component, at least 16. `cluster.n_components: auto` keeps
components large enough to serve a mixture (about 100 kept documents each, 2 to 20; CLIMB used
21) and, when the user fixed search.runs, few enough for that budget to fit them.
"""

from __future__ import annotations

RUNS_PER_COMPONENT = 6
MIN_RUNS = 16
DOCS_PER_COMPONENT = 100
MAX_COMPONENTS = 20


def search_runs(runs: int | str, components: int) -> int:
    """search.runs, or for auto RUNS_PER_COMPONENT per component (at least MIN_RUNS)."""
    return int(runs) if runs != "auto" else max(MIN_RUNS, RUNS_PER_COMPONENT * components)


def component_count(n_components: int | str | None, documents: int, runs: int | str) -> int | None:
    """cluster.n_components, or for auto: one per DOCS_PER_COMPONENT documents, 2 to MAX_COMPONENTS,
    and at most runs / RUNS_PER_COMPONENT when search.runs is a number."""
    if n_components != "auto":
        return n_components
    count = min(MAX_COMPONENTS, documents // DOCS_PER_COMPONENT)
    if runs != "auto":
        count = min(count, int(runs) // RUNS_PER_COMPONENT)
    return max(2, count)
