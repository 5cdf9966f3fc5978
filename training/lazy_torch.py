"""torch helpers that import torch only when called, so that `smart … --help` and argument errors, which
import every command's module, stay quick (torch alone takes seconds to import)."""

from __future__ import annotations

import functools


def no_grad(fn):
    """`@torch.no_grad()` without importing torch when the module is imported."""
    @functools.wraps(fn)
    def without_gradients(*args, **kwargs):
        import torch
        with torch.no_grad():
            return fn(*args, **kwargs)
    return without_gradients
