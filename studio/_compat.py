"""Work around a PySide6 6.12 refcount bug on CPython 3.11.

Every call of a void Qt method drops one reference to `None` too many, and every emission of
a `Signal(bool)` one reference to `True`/`False` (check: `sys.getrefcount(None)` falls by one
per `widget.update()`). These singletons start with a few thousand references, so a painting
GUI would die with "Fatal Python error: none_dealloc" within seconds. CPython 3.12+ made them
immortal (PEP 683), where the stray decrefs are harmless; here we give them the same
treatment by raising their reference counts far out of reach. Nothing reads these counts,
and the singletons are never deallocated anyway.
"""

from __future__ import annotations

import sys

_IMMORTAL_FLOOR = 1 << 40
_IMMORTAL_BUMP = 1 << 60


def make_singletons_immortal() -> bool:
    """Raise None/True/False refcounts on CPython < 3.12. Returns True when it changed anything."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    import ctypes

    changed = False
    for obj in (None, True, False):
        refcount = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt is the object's first field
        if refcount.value < _IMMORTAL_FLOOR:
            refcount.value += _IMMORTAL_BUMP
            changed = True
    return changed
