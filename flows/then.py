"""What a scheduled build may do after the build (`--then search,export`), and the flow's name:
shared by the flow (flows/scheduled.py) and the deployments that schedule it (flows/deployments.py)."""

from __future__ import annotations

from mixforge.config import MixforgeConfig
from mixforge.errors import MixforgeError
from mixforge.mixers.objective import Objective

FLOW_NAME = "mixforge-scheduled-build"
THEN_STAGES = ("search", "export")

def check_then(then: list[str], cfg: MixforgeConfig) -> list[str]:
    """The --then stages, checked: known names, export only after a search (it exports the
    search's proposal), and a search target the config sets (there is no one to ask at 3 a.m.)."""
    unknown = [s for s in then if s not in THEN_STAGES]
    if unknown:
        raise MixforgeError(f"--then {','.join(then)}: unknown stage {unknown[0]!r}; choose from {', '.join(THEN_STAGES)}")
    if "export" in then and "search" not in then:
        raise MixforgeError("--then export needs search too (--then search,export): the export writes the search's proposal")
    if "search" in then:
        if not cfg.search.target:
            raise MixforgeError("--then search: the config sets no search.target (e.g. bpb_mean), the metric the search optimises")
        Objective.parse(cfg.search.target, cfg.search.maximize).sign  # noqa: B018 - fails now when the direction is unknown
    return [s for s in THEN_STAGES if s in then]
