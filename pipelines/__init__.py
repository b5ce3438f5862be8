"""mixforge.pipelines: datatrove steps and plain functions for each stage (no Prefect here)."""
