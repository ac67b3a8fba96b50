"""Workarounds for defects of the Qt binding that the app must survive.

PySide6 6.12.0 on CPython 3.11 returns ``None`` from Qt methods without a
result (measured for ``setText``, ``setValue`` and ``processEvents``) and
``True`` from ``Signal.emit`` without taking a reference, so each call lowers
the singleton's reference count by one. A window that reports progress makes thousands of such
calls a minute, and once a count reaches zero CPython aborts with "none_dealloc:
deallocating None" (``bench/gui_latency.py`` hit it within two minutes of
summarizing a long document). From CPython 3.12 on these singletons are
immortal and the lost references do no harm. PySide6 6.11.3 keeps the count
(1,000 ``setText`` calls measured on CPython 3.11.7), and pyproject.toml
excludes 6.12.0; the reserve protects an environment that has it anyway.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

# Far more calls than a session can make, and far below Py_ssize_t's maximum.
_RESERVE = 1 << 40
_reserved = False


def keep_singletons_alive() -> None:
    """Give None, True and False a reserve of references on CPython before 3.12, once per process.

    This does by hand what CPython 3.12 does for these objects, which it never
    frees. It writes ``ob_refcnt``, the first field of every object in a
    release build, and checks that field against ``sys.getrefcount`` first.
    """
    global _reserved
    if _reserved or sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return
    for singleton in (None, True, False):
        count = ctypes.c_ssize_t.from_address(id(singleton))
        # getrefcount counts its own argument too, and other threads may move the count meanwhile.
        if abs(count.value - (sys.getrefcount(singleton) - 1)) > 1000:
            log.warning("unexpected object layout: reference reserve for %r not set", singleton)
            return
        count.value += _RESERVE
    _reserved = True
    log.info("reserved references for None, True and False against the Qt binding's lost references")
