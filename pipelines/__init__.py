"""mixforge.pipelines: datatrove steps and plain functions for each stage (no Prefect here)."""

import os

# Set before datatrove, loguru and tqdm are imported (they read these at import time). Here
# because any module of the package may be the first to import datatrove; setdefault keeps a
# user's own setting.
os.environ.setdefault("LOGURU_DIAGNOSE", "NO")  # task failures: short tracebacks, no variable dumps
os.environ.setdefault("TQDM_DISABLE", "1")  # datatrove's MinHash cluster step draws its own bar
