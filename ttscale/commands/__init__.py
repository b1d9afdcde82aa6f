"""Subcommands of the ``ttscale`` CLI, one module each (see :mod:`ttscale.cli`)."""
