"""The ``ttscale`` command line: ``ttscale demo | sweep | plot | train | select | gpt2 | reproduce | bench``.

Each subcommand lives in ``ttscale/commands/<name>.py`` and defines ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported lazily so that
``ttscale demo`` does not pay for matplotlib or Flax.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("demo", "sweep", "plot", "train", "select", "gpt2", "reproduce", "bench")


def _available():
    found = {}
    for name in COMMANDS:
        try:
            found[name] = importlib.import_module(f"ttscale.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ttscale.commands.{name}":
                raise
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttscale", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-devices", type=int, default=None, metavar="N",
                        help="split the CPU into N XLA devices that sweeps shard over (default: one per usable core)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from ttscale.devices import use_cpu_cores

        use_cpu_cores(args.cpu_devices, warn=args.cpu_devices is not None)
        return int(args._run(args) or 0)
    except (ValueError, TypeError) as exc:
        print(f"ttscale {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
