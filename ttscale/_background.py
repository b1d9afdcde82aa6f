"""Imports run in a daemon thread, so that their Python work overlaps C++ work that releases the GIL.

A CLI sweep spends ~0.3 s of its fixed cost importing xarray (and pandas) and netCDF4, and about as long
loading compiled programs and running them, which release the GIL. :func:`import_modules` starts the
imports early; the code that needs a module still imports it as usual, and waits (on the module's import
lock) only for what the thread has not finished. An import that fails in the thread is left alone: the
import that needs the module raises the error again, where it belongs.
"""

from __future__ import annotations

import importlib
import sys
import threading


def _import_all(names) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the caller's own import reports it
            return


def import_modules(*names: str) -> None:
    """Import ``names`` (in order) in a daemon thread; nothing happens when all are imported already."""
    missing = [name for name in names if name not in sys.modules]
    if missing:
        threading.Thread(target=_import_all, args=(missing,), name="ttscale-imports", daemon=True).start()
