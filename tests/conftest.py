"""Fixtures: `local_cluster(n, ...)` starts real node processes and always cleans them up."""

from __future__ import annotations

import pytest

from cluster.local_cluster import LocalCluster


@pytest.fixture
def local_cluster(tmp_path):
    clusters = []

    def make(n: int = 10, start: bool = True, **kwargs) -> LocalCluster:
        cluster = LocalCluster(tmp_path / f"cluster{len(clusters)}", n, **kwargs)
        clusters.append(cluster)
        if start:
            cluster.start_all()
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()
