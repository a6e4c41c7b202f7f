"""Bounds the tests hold a cluster to, from its own settings."""

from __future__ import annotations

from membership.suspicion import detection_bound


def detection(cluster) -> float:
    """The detection bound of a LocalCluster's membership timings."""
    m = cluster.membership
    return detection_bound(m["protocol_period"], m["ping_timeout"], m["suspicion"] == "on",
                           m["suspicion_timeout"])
