"""What the HyDFS benchmark runs: the cluster's membership timings, and the sizes and counts
of every part (`Settings`; `QUICK` for `--quick`). MB means 2**20 bytes throughout."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1 << 20
KB = 1 << 10
MEMBERSHIP = {"protocol_period": 0.5, "ping_timeout": 0.5, "suspicion": "on",
              "suspicion_timeout": 2.0}
ZIPF_A = 1.2
SEED = 1234


@dataclass(frozen=True)
class Settings:
    throughput_mb: tuple = (1, 10, 100)
    throughput_reps: int = 3
    appends: int = 500
    merge_total: int = 1000
    merge_clients: tuple = (1, 2, 5, 10)
    merge_kb: tuple = (4, 40)
    merge_reps: int = 3
    rerep_mb: tuple = (1, 5, 20, 50, 100)
    cache_files: int = 200
    cache_fractions: tuple = (0.0, 0.1, 0.2, 0.5, 1.0)
    cache_ops: int = 1000
    cache_warmup: int = 200
    cache_nodes: int = 4


QUICK = Settings(throughput_mb=(1, 10), throughput_reps=2, appends=50, merge_total=100,
                 merge_clients=(1, 10), merge_reps=1, rerep_mb=(1, 5), cache_files=50,
                 cache_fractions=(0.0, 0.5, 1.0), cache_ops=150, cache_warmup=30)
