#!/usr/bin/env python3
"""RainStorm: group membership, the HyDFS file system and stream processing in one node.

    python rainstorm.py introducer [--config FILE]
    python rainstorm.py node --vm NN [--config FILE]
    python rainstorm.py ctl --vm NN [--config FILE] [--json] COMMAND [ARGS...]

--config defaults to $RAINSTORM_CONFIG, then ./config.ini. See README.md and INTERFACE.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from cluster.config import ConfigError, load_config, normalize_vm


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rainstorm.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'python rainstorm.py ctl --vm 01 help' for the REPL commands.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{introducer,node,ctl}")

    def with_config(p):
        p.add_argument("--config", help="config file (default: $RAINSTORM_CONFIG, then ./config.ini)")
        return p

    with_config(sub.add_parser("introducer", help="start the introducer node ([cluster] introducer)"))
    node = with_config(sub.add_parser("node", help="start node NN and join through the introducer"))
    node.add_argument("--vm", required=True, help="node number, e.g. 03 or 3")
    ctl = with_config(sub.add_parser(
        "ctl", help="run one REPL command on a running node",
        description="Exit status: 0 ok, 1 command failed, 2 usage error, 3 node unreachable."))
    ctl.add_argument("--vm", required=True, help="node number, e.g. 03 or 3")
    ctl.add_argument("--json", action="store_true", help="print one JSON document")
    ctl.add_argument("--timeout", type=float, default=10.0,
                     help="seconds of silence from the node before giving up (default 10; "
                          "long commands send keepalives)")
    ctl.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS...]")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "ctl" and args.argv and args.argv[-1] == "--json":
        args.argv, args.json = args.argv[:-1], True        # `ctl --vm 3 list_mem --json`
    as_json = args.command == "ctl" and args.json
    try:
        config = load_config(args.config)
        vm = config.introducer if args.command == "introducer" else normalize_vm(args.vm)
        config.address(vm)
    except ConfigError as exc:
        return usage_error(str(exc), as_json)
    if args.command == "ctl":
        from cluster.ctl import run_ctl
        if not args.argv:
            return usage_error("ctl needs a COMMAND", as_json)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # `ctl ... | head`: exit quietly
        return run_ctl(config, vm, args.argv, args.json, args.timeout)
    from node.node import run_node
    return run_node(config, vm)


def usage_error(reason: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "error": reason}))
    print(f"rainstorm: {reason}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
