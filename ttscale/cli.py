"""The ``ttscale`` command line: ``ttscale demo | sweep | plot | train | select | gpt2 | reproduce | bench``.

Each subcommand lives in ``ttscale/commands/<name>.py`` and defines ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported lazily so that
``ttscale demo`` does not pay for matplotlib or Flax.

Errors are handled here, for every command: each is one line on stderr,
``ttscale <command>: error: <message>``, never a traceback. Exit codes: 2 for bad input
(argument errors, ``ValueError``/``TypeError``), 1 for runtime failures (a diverged computation,
out of memory, a full disk, an unwritable file, an unexpected exception), 130 when interrupted
(Ctrl-C). ``TTSCALE_TRACEBACK=1`` re-raises unexpected exceptions with their traceback. Help
text is shown without reStructuredText markup, and every ``--seed`` takes ``0 .. 2**32 - 1``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys

COMMANDS = ("demo", "sweep", "plot", "train", "select", "gpt2", "reproduce", "bench")
#: commands whose ``--out`` holds resumable work: rerunning the same command continues it
RESUMABLE = ("sweep", "train", "gpt2", "reproduce")
#: ``--seed`` range: JAX keys hold 32 bits (larger seeds would alias smaller ones)
SEED_MAX = 2**32 - 1
#: argument dests whose size an out-of-memory error is blamed on (listed in the message when present)
SIZE_ARGS = ("d", "batch", "prompts", "chunk", "m", "n", "k_max")

_RST_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")
_RST_LITERAL = re.compile(r"``(.+?)``")


def plain(text):
    """``text`` without reStructuredText markup: ``:func:`x``` → ``x``, double-backquoted literals → their text."""
    if not text:
        return text
    return _RST_LITERAL.sub(r"\1", _RST_ROLE.sub(r"\1", text))


def one_line(message) -> str:
    """``message`` with all whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(str(message).split())


def seed(text: str) -> int:
    """``argparse`` type of ``--seed``: an integer in ``0 .. 2**32 - 1``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..{SEED_MAX} (2**32 - 1), got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..{SEED_MAX} (2**32 - 1), got {value}")
    return value


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``<prog>: error: <message> (see <prog> --help)``, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _available():
    found = {}
    for name in COMMANDS:
        try:
            found[name] = importlib.import_module(f"ttscale.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ttscale.commands.{name}":
                raise
    return found


def _finish(parser: argparse.ArgumentParser) -> None:
    """Strip RST from the help of ``parser`` and give every ``--seed`` the checked :func:`seed` type."""
    parser.description = plain(parser.description)
    parser.epilog = plain(parser.epilog)
    for action in parser._actions:
        action.help = plain(action.help)
        if action.dest == "seed" and action.option_strings:
            action.type = seed


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ttscale", description=plain(__doc__.splitlines()[0]))
    parser.add_argument("--cpu-devices", type=int, default=None, metavar="N",
                        help="split the CPU into N XLA devices that sweeps shard over (default: one per usable core)")
    parser.add_argument("--no-cache", action="store_true",
                        help="do not keep compiled programs across runs (default: kept in $TTSCALE_CACHE_DIR or "
                             "~/.cache/ttscale; TTSCALE_NO_CACHE=1 also turns it off)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available().items():
        p = sub.add_parser(name, help=plain(module.HELP), description=plain(module.HELP))
        module.add_arguments(p)
        _finish(p)
        p.set_defaults(_run=module.run)
    _finish(parser)
    return parser


def _interrupted(args) -> str:
    out = getattr(args, "out", None)
    if args.command in RESUMABLE and out:
        return f"interrupted; rerun the same command to resume from what {out} holds"
    return "interrupted"


def _os_error(exc: OSError, args) -> str:
    out = getattr(args, "out", None)
    context = "; ".join(part for part in (exc.filename and str(exc.filename), out and f"--out {out}") if part)
    where = f" ({context})" if context else ""
    reason = exc.strerror or str(exc)
    resume = "rerun the same command to resume" if args.command in RESUMABLE else "rerun the command"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{where}: free some space, then {resume}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: {reason}; choose a writable location"
    return f"{reason}{where}"


def _size_hint(args) -> str:
    names = [f"--{dest.replace('_', '-')}" for dest in SIZE_ARGS if getattr(args, dest, None) is not None]
    return f"lower {', '.join(names)}" if names else "use smaller sizes"


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f"ttscale {args.command}"

    def fail(code: int, message: str) -> int:
        print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
        return code

    try:
        from ttscale.devices import cache_root, use_compile_cache, use_cpu_cores
        from ttscale.numpy_dispatch import import_numpy

        import_numpy(cache_dir=None if args.no_cache else cache_root())  # first: on AMD Zen 4, without slow sorts

        use_cpu_cores(args.cpu_devices, warn=args.cpu_devices is not None)
        if not args.no_cache:
            use_compile_cache()
        return int(args._run(args) or 0)
    except KeyboardInterrupt as exc:
        detail = f" ({exc})" if str(exc) else ""
        print(f"{prog}: {_interrupted(args)}{detail}", file=sys.stderr)
        return 130
    except (ValueError, TypeError) as exc:
        return fail(2, exc)
    except FloatingPointError as exc:  # a diverged computation: no result was written
        return fail(1, exc)
    except MemoryError:
        return fail(1, f"out of memory: {_size_hint(args)}")
    except OSError as exc:
        return fail(1, _os_error(exc, args))
    except Exception as exc:  # noqa: BLE001 - the rule: one line, never a traceback
        text = one_line(exc)
        if "RESOURCE_EXHAUSTED" in text or "Out of memory" in text:
            return fail(1, f"out of memory ({text[:200]}): {_size_hint(args)}")
        if os.environ.get("TTSCALE_TRACEBACK"):
            raise
        return fail(1, f"unexpected {type(exc).__name__}: {text[:500]} (a bug: rerun with TTSCALE_TRACEBACK=1 "
                       f"for the traceback and report it)")


def console() -> None:
    """The ``ttscale`` command: :func:`main`, then a fast exit that skips Python's interpreter teardown.

    Tearing down a process that has loaded JAX (its XLA client, compiled programs and thousands of
    modules) takes ~0.25 s on a 2-core CPU — a fifth of a small sweep's whole-process time
    (``benchmarks/whole_process.sh``). Every file is written, fsynced and closed before :func:`main`
    returns, so after running the ``atexit`` handlers (JAX's own, e.g. multi-process finalisation)
    and flushing the standard streams the process ends with ``os._exit``. An uncaught exception
    still propagates (and tears down) as usual; ``main`` itself never calls this.
    """
    import atexit

    try:
        code = main()
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
