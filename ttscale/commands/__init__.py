"""Subcommands of the ``ttscale`` CLI, one module each (see :mod:`ttscale.cli`), and the checks they share.

The helpers here run before any compute, so that a bad ``--out`` or an impossible size is refused
in one line (``ValueError`` naming the argument: exit 2) instead of after minutes of work.
Standard library only: every command imports this package.
"""

from __future__ import annotations

import contextlib
import re


def prepare_out_dir(arg: str, path: str) -> str:
    """:func:`ttscale.store.prepare_out_dir` (imported when called: this package stays standard library only)."""
    from ttscale import store

    return store.prepare_out_dir(arg, path)


def check_fits(nbytes: float, what: str, hint: str) -> None:
    """:func:`ttscale._checks.check_fits` (imported when called)."""
    from ttscale import _checks

    _checks.check_fits(nbytes, what, hint)


@contextlib.contextmanager
def cli_names(**names):
    """Re-raise a ``ValueError``/``TypeError`` whose message starts with an API argument's name with the
    command-line option in front: ``cli_names(test="--target t.npy")`` turns ``"test is singular"`` into
    ``"--target t.npy: test is singular"`` (the library names its arguments, the CLI user knows the options)."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        text = str(exc)
        for api, option in names.items():
            if re.match(rf"{re.escape(api)}\b", text):
                raise type(exc)(f"{option}: {text}") from None
        raise
