"""Cluster configuration: config.ini loaded, defaulted and validated.

Every key has a default (the course layout: ten nodes 01..10 on 127.0.0.1:7001..7010), so a
file may hold only what differs. Unknown sections or keys and bad values are refused with a
`ConfigError` that names the key, so a typo never silently falls back to a default.

The loaded `Config` is immutable and shared by every part of a node (membership, HyDFS,
RainStorm); it is also what the test harness writes to start clusters with fast timings.
"""

from __future__ import annotations

import configparser
import math
import os
import re
from dataclasses import dataclass, field, replace

DEFAULT_NODES = {f"{i:02d}": f"127.0.0.1:{7000 + i}" for i in range(1, 11)}

_VM_RE = re.compile(r"^\d{1,2}$")


class ConfigError(ValueError):
    """A bad config file: the message names the section and key."""


@dataclass(frozen=True)
class MembershipConfig:
    protocol_period: float = 5.0    # seconds between probe rounds
    ping_timeout: float = 1.5       # no ack by then: failed (Ping-Ack) or suspected (Ping-Ack+S)
    suspicion: bool = True          # initial cluster mode: Ping-Ack+S when true
    suspicion_timeout: float = 8.0  # seconds a suspect has to refute before it is failed
    monitors: int = 4               # fixed peers probed every round, besides one random peer
    drop_rate: float = 0.0          # experiments: chance to drop an incoming membership message


@dataclass(frozen=True)
class HydfsConfig:
    replicas: int = 3
    ring_bits: int = 11             # ring positions 0 .. 2**ring_bits - 1
    cache_mb: float = 64.0          # client-side cache budget; 0 disables it
    merge_after_appends: int = 512  # a file's primary merges it at this many pending; 0: never


@dataclass(frozen=True)
class StreamConfig:
    batch_interval: float = 0.1       # at most this long between flushes (sooner when idle)
    state_flush_interval: float = 0.1
    source_window_mb: float = 64.0    # unacknowledged bytes a source task keeps in flight
    chain: bool = True                # a stateless OP1 runs in its source tasks (no OP1 tasks),
                                      # and a stateless OP2 after it (no OP2 tasks either)


@dataclass(frozen=True)
class Config:
    introducer: str = "01"
    leader: str = "01"
    data_dir: str = "data"
    secret: str = ""
    log_dir: str = "logs"
    http_offset: int = 1000         # node NN serves HTTP at its port + this; 0: no HTTP
    nodes: dict = field(default_factory=lambda: dict(DEFAULT_NODES))
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    hydfs: HydfsConfig = field(default_factory=HydfsConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    source: str = "<defaults>"

    def address(self, vm: str) -> tuple[str, int]:
        """(host, port) of node `vm`; raises ConfigError for a node not in [nodes]."""
        vm = normalize_vm(vm)
        if vm not in self.nodes:
            raise ConfigError(f"node {vm} is not in [nodes] of {self.source}")
        host, port = self.nodes[vm].rsplit(":", 1)
        return host, int(port)

    def node_data_dir(self, vm: str) -> str:
        return os.path.join(self.data_dir, f"vm{normalize_vm(vm)}")

    def node_log_path(self, vm: str) -> str:
        return os.path.join(self.log_dir, f"vm{normalize_vm(vm)}.log")

    def with_changes(self, **changes) -> "Config":
        return replace(self, **changes)


def normalize_vm(vm: str) -> str:
    """'3', '03' and ' 03 ' all name node 03; anything else is a ConfigError."""
    text = str(vm).strip()
    if not _VM_RE.match(text) or int(text) == 0:
        raise ConfigError(f"bad node number {vm!r}: expected 01..99")
    return f"{int(text):02d}"


def default_config_path() -> str:
    return os.environ.get("RAINSTORM_CONFIG") or "config.ini"


def load_config(path: str | None = None) -> Config:
    """Load and validate `path` (default: $RAINSTORM_CONFIG, then ./config.ini).

    A missing ./config.ini means "all defaults"; a missing file named by `path` or by
    $RAINSTORM_CONFIG is an error (a typo must not silently reach another cluster).
    Relative data_dir and log_dir are resolved against the config file's directory, so
    every node sharing a config agrees on them whatever its working directory.
    """
    explicit = path is not None or bool(os.environ.get("RAINSTORM_CONFIG"))
    path = path or default_config_path()
    if not os.path.exists(path):
        if explicit:
            raise ConfigError(f"config file {path} does not exist")
        return Config()
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"),
                                       comment_prefixes=(";", "#"), interpolation=None)
    parser.optionxform = str  # keep node names and keys as written
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from exc
    return _build(parser, path)


_SECTIONS = {"cluster", "nodes", "membership", "hydfs", "stream"}


def _build(parser: configparser.ConfigParser, path: str) -> Config:
    for section in parser.sections():
        if section not in _SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}]")
    base = os.path.dirname(os.path.abspath(path))
    cluster = _section(parser, "cluster", path)
    nodes = _nodes(parser, path)
    config = Config(
        introducer=_vm_value(cluster.pop("introducer", "01"), "cluster", "introducer", path),
        leader=_vm_value(cluster.pop("leader", ""), "cluster", "leader", path),
        data_dir=os.path.join(base, cluster.pop("data_dir", "data")),
        secret=cluster.pop("secret", ""),
        log_dir=os.path.join(base, cluster.pop("log_dir", "logs")),
        http_offset=_parse_value("int", cluster.pop("http_offset", "1000"), "cluster",
                                 "http_offset", path),
        nodes=nodes,
        membership=_typed(MembershipConfig, _section(parser, "membership", path), "membership", path),
        hydfs=_typed(HydfsConfig, _section(parser, "hydfs", path), "hydfs", path),
        stream=_typed(StreamConfig, _section(parser, "stream", path), "stream", path),
        source=path,
    )
    _reject_unknown(cluster, "cluster", path)
    if not config.leader:
        config = config.with_changes(leader=config.introducer)
    _check_consistency(config, path)
    return config


def _section(parser, name: str, path: str) -> dict:
    return dict(parser.items(name)) if parser.has_section(name) else {}


def _reject_unknown(remaining: dict, section: str, path: str) -> None:
    if remaining:
        key = sorted(remaining)[0]
        raise ConfigError(f"{path}: unknown key {key!r} in [{section}]")


def _vm_value(value: str, section: str, key: str, path: str) -> str:
    if value == "":
        return ""
    try:
        return normalize_vm(value)
    except ConfigError as exc:
        raise ConfigError(f"{path}: [{section}] {key}: {exc}") from None


def _nodes(parser, path: str) -> dict:
    raw = _section(parser, "nodes", path)
    if not raw:
        return dict(DEFAULT_NODES)
    nodes = {}
    for key, value in raw.items():
        vm = _vm_value(key, "nodes", key, path)
        host, sep, port = value.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{path}: [nodes] {key} = {value!r}: expected host:port")
        nodes[vm] = f"{host}:{int(port)}"
    if len(set(nodes.values())) != len(nodes):
        raise ConfigError(f"{path}: [nodes] two nodes share one host:port")
    return nodes


_BOOL = {"on": True, "true": True, "yes": True, "1": True,
         "off": False, "false": False, "no": False, "0": False}

# Valid ranges, checked after parsing: (low, high); None means unbounded.
_RANGES = {
    "protocol_period": (0.01, None), "ping_timeout": (0.001, None),
    "suspicion_timeout": (0.0, None), "monitors": (0, 64), "drop_rate": (0.0, 1.0),
    "replicas": (1, 16), "ring_bits": (4, 32), "cache_mb": (0.0, None),
    "merge_after_appends": (0, None),
    "batch_interval": (0.001, 60.0), "state_flush_interval": (0.001, 600.0),
    "source_window_mb": (0.01, 4096.0), "http_offset": (-65535, 65535),
}


def _typed(cls, values: dict, section: str, path: str):
    fields = cls.__dataclass_fields__
    parsed = {}
    for key, text in values.items():
        if key not in fields:
            raise ConfigError(f"{path}: unknown key {key!r} in [{section}]")
        parsed[key] = _parse_value(fields[key].type, text, section, key, path)
    return cls(**parsed)


def _parse_value(kind: str, text: str, section: str, key: str, path: str):
    where = f"{path}: [{section}] {key} = {text!r}"
    text = text.strip()
    if kind == "bool":
        if text.lower() not in _BOOL:
            raise ConfigError(f"{where}: expected on or off")
        return _BOOL[text.lower()]
    try:
        value = int(text) if kind == "int" else float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected {'an integer' if kind == 'int' else 'a number'}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number")
    low, high = _RANGES.get(key, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{where}: must be between {low} and {high if high is not None else 'inf'}")
    return value


def _check_consistency(config: Config, path: str) -> None:
    for key in ("introducer", "leader"):
        vm = getattr(config, key)
        if vm not in config.nodes:
            raise ConfigError(f"{path}: [cluster] {key} = {vm} is not listed in [nodes]")
