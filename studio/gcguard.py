"""Run Python's cyclic garbage collector on the UI thread only.

CPython collects cycles in whichever thread happens to allocate when a generation's threshold is
crossed. The studio has Python worker threads (rendering, host connection, generation and training
jobs; tqdm's monitor), so a cycle holding a Qt object that belongs to the UI thread (a closed
window's controller with its QTimer, a finished job's QThread) could be destroyed on a worker
thread. Qt then cannot unregister that object's timers ("Timers cannot be stopped from another
thread"), and the next timer event on the UI thread dereferences freed memory: a segfault (the
same failure a worker-thread slot caused in the test session before WAV export used bound slots).
So automatic collection is switched off and the UI thread collects instead, on a short timer, with
CPython's own generation thresholds.
"""

from __future__ import annotations

import gc

COLLECT_INTERVAL_MS = 250


def collect_due() -> int | None:
    """Collect the oldest generation whose threshold is crossed (what CPython would do); returns it."""
    counts, thresholds = gc.get_count(), gc.get_threshold()
    generation = None
    for gen in range(3):
        if thresholds[gen] and counts[gen] > thresholds[gen]:
            generation = gen
    if generation is not None:
        gc.collect(generation)
    return generation


def install_main_thread_gc(app=None) -> bool:
    """Switch automatic GC off and collect from a timer on `app`'s (the UI) thread. Idempotent;
    returns True when it installed the timer now."""
    from PySide6.QtCore import QCoreApplication, QTimer

    app = app or QCoreApplication.instance()
    if app is None:
        raise RuntimeError("install_main_thread_gc needs a QApplication")
    if getattr(app, "_smart_gc_timer", None) is not None:
        return False
    gc.disable()
    timer = QTimer(app)
    timer.setInterval(COLLECT_INTERVAL_MS)
    timer.timeout.connect(collect_due)
    timer.start()
    app._smart_gc_timer = timer
    app.aboutToQuit.connect(gc.enable)
    return True
