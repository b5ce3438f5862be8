"""Cluster: k-means over the vectors, incremental assignment and refits, and the cluster report."""
