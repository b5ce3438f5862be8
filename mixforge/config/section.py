"""The base of every config section, and the stable hash of settings that fingerprints use."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict



SourceKind = Literal["prose", "code", "reference"]
SourceFormat = Literal["auto", "jsonl", "parquet", "txt", "hf_disk"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    # a non-finite number (.inf, .nan) is never a valid setting: nan passes no bound, inf passes gt=0
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)




def section_hash(*parts: Any) -> str:
    """Stable short hash of JSON-able settings (stage fingerprints, config hash in manifests)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
