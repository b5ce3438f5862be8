"""Cluster: k-means over the vectors, incremental assignment and refits, and the cluster report."""

# what the other packages use (they import it from here); the rest is internal

from mixforge.pipelines.cluster.report import ReportSample, cluster_rows, component_table, write_report
from mixforge.pipelines.cluster.stage import cluster_fingerprint, run_cluster, valid_counts, valid_vectors

__all__ = [
    "ReportSample", "cluster_fingerprint", "cluster_rows", "component_table", "run_cluster", "valid_counts",
    "valid_vectors", "write_report",
]
