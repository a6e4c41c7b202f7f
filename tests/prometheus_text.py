"""A strict reader of the Prometheus text exposition format, version 0.0.4, for tests.

Stricter than Prometheus itself where our naming rules say so: every family has HELP and
TYPE lines before its samples, names start with `rainstorm_`, counters end in `_total`,
no unit but the base ones (`_seconds`, `_bytes`), no label that could be a key, a line or
a file name; every histogram's buckets are cumulative and end at `+Inf`, equal to `_count`.
Any breach raises FormatError naming the line.
"""

from __future__ import annotations

import math
import re

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^\n]*\})? "
                    r"(?P<value>\S+)(?: (?P<ts>-?\d+))?$")
KINDS = ("counter", "gauge", "histogram", "summary", "untyped")
NOT_BASE_UNITS = ("_ms", "_milliseconds", "_microseconds", "_kb", "_kilobytes", "_mb",
                  "_megabytes", "_minutes", "_hours", "_percent")
FORBIDDEN_LABELS = {"key", "line", "file", "name", "path", "value", "id", "member"}


class FormatError(ValueError):
    pass


def parse(text: str) -> dict:
    """{family name: {"type", "help", "samples": {(sample name, labels): value}}}."""
    if not text.endswith("\n"):
        raise FormatError("the text must end with a newline")
    families: dict = {}
    current = None
    for number, line in enumerate(text.split("\n")[:-1], 1):
        where = f"line {number}: {line[:120]!r}"
        if not line:
            raise FormatError(f"{where}: empty line")
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            _check_name(name, where)
            if name in families:
                raise FormatError(f"{where}: a second HELP for {name}")
            _check_escapes(help_text, '\\n', where)
            families[name] = current = {"help": help_text, "type": None, "samples": {},
                                        "name": name}
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            if current is None or current["name"] != name or current["type"] is not None:
                raise FormatError(f"{where}: TYPE must follow its family's HELP, once")
            if kind not in KINDS:
                raise FormatError(f"{where}: unknown type {kind!r}")
            if kind == "counter" and not name.endswith("_total"):
                raise FormatError(f"{where}: counter {name} must end in _total")
            current["type"] = kind
        elif line.startswith("#"):
            continue
        else:
            _sample(line, current, where)
    for family in families.values():
        if family["type"] is None:
            raise FormatError(f"{family['name']}: HELP without TYPE")
        if family["type"] == "histogram":
            check_histogram(family)
    return families


def _check_name(name: str, where: str) -> None:
    if not NAME.fullmatch(name):
        raise FormatError(f"{where}: bad metric name {name!r}")
    if not name.startswith("rainstorm_"):
        raise FormatError(f"{where}: {name} lacks the rainstorm_ prefix")
    for unit in NOT_BASE_UNITS:
        if unit + "_" in name + "_":
            raise FormatError(f"{where}: {name} is not in base units ({unit})")


def _check_escapes(text: str, allowed: str, where: str) -> None:
    i = 0
    while i < len(text):
        if text[i] == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "\\" + allowed.replace("\\", ""):
                raise FormatError(f"{where}: bad escape in {text!r}")
            i += 2
        else:
            i += 1


def _sample(line: str, family, where: str) -> None:
    match = SAMPLE.match(line)
    if match is None:
        raise FormatError(f"{where}: not a sample line")
    name = match["name"]
    if family is None or family["type"] is None:
        raise FormatError(f"{where}: sample before its HELP and TYPE")
    base = family["name"]
    allowed = {base} if family["type"] != "histogram" else \
        {base + "_bucket", base + "_sum", base + "_count"}
    if name not in allowed:
        raise FormatError(f"{where}: {name} does not belong to family {base}")
    labels = _labels(match["labels"] or "", where)
    for label in labels:
        if label in FORBIDDEN_LABELS:
            raise FormatError(f"{where}: label {label!r} is high-cardinality")
    if (name.endswith("_bucket") and family["type"] == "histogram") != ("le" in labels):
        raise FormatError(f"{where}: le belongs on histogram buckets only")
    value = _value(match["value"], where)
    key = (name, tuple(sorted(labels.items())))
    if key in family["samples"]:
        raise FormatError(f"{where}: duplicate series")
    if family["type"] == "counter" and (value < 0 or math.isnan(value)):
        raise FormatError(f"{where}: a counter must be >= 0")
    family["samples"][key] = value


def _labels(text: str, where: str) -> dict:
    labels: dict = {}
    if not text:
        return labels
    body, i = text[1:-1], 0
    while i < len(body):
        match = LABEL_NAME.match(body, i)
        if match is None or body[match.end():match.end() + 2] != '="':
            raise FormatError(f"{where}: bad label at {body[i:i + 30]!r}")
        name, i = match.group(), match.end() + 2
        value = []
        while True:
            if i >= len(body):
                raise FormatError(f"{where}: unterminated label value")
            ch = body[i]
            if ch == "\\":
                nxt = body[i + 1:i + 2]
                if nxt not in ('\\', '"', 'n'):
                    raise FormatError(f"{where}: bad escape \\{nxt} in a label value")
                value.append({"n": "\n"}.get(nxt, nxt))
                i += 2
            elif ch == '"':
                i += 1
                break
            elif ch == "\n":
                raise FormatError(f"{where}: raw newline in a label value")
            else:
                value.append(ch)
                i += 1
        if name in labels:
            raise FormatError(f"{where}: label {name} twice")
        labels[name] = "".join(value)
        if i < len(body):
            if body[i] != ",":
                raise FormatError(f"{where}: expected ',' between labels")
            i += 1
    return labels


def _value(text: str, where: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    try:
        return float(text)
    except ValueError:
        raise FormatError(f"{where}: bad value {text!r}") from None


def check_histogram(family: dict) -> None:
    """Buckets cumulative in le order, +Inf present and equal to _count, for every series."""
    name = family["name"]
    series: dict = {}
    for (sample, labels), value in family["samples"].items():
        rest = tuple(kv for kv in labels if kv[0] != "le")
        entry = series.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sample.endswith("_bucket"):
            entry["buckets"].append((_value(dict(labels)["le"], name), value))
        elif sample.endswith("_sum"):
            entry["sum"] = value
        else:
            entry["count"] = value
    for labels, entry in series.items():
        what = f"{name}{dict(labels)}"
        if entry["sum"] is None or entry["count"] is None:
            raise FormatError(f"{what}: _sum and _count are required")
        buckets = sorted(entry["buckets"])
        if not buckets or buckets[-1][0] != math.inf:
            raise FormatError(f"{what}: no +Inf bucket")
        counts = [count for _, count in buckets]
        if counts != sorted(counts):
            raise FormatError(f"{what}: buckets are not cumulative: {counts}")
        if counts[-1] != entry["count"]:
            raise FormatError(f"{what}: +Inf bucket {counts[-1]} != _count {entry['count']}")


def value(families: dict, name: str, **labels) -> float | None:
    """One series' value (a histogram's by its sample name), or None."""
    family = families.get(name) or families.get(re.sub(r"_(bucket|sum|count)$", "", name))
    if family is None:
        return None
    want = tuple(sorted((k, str(v)) for k, v in labels.items()))
    return family["samples"].get((name, want))


def series(families: dict, name: str, sample: str | None = None) -> dict:
    """{labels dict as sorted tuple: value} of one family's samples named `sample`."""
    family = families.get(name) or {"samples": {}}
    sample = sample or name
    return {labels: v for (s, labels), v in family["samples"].items() if s == sample}
