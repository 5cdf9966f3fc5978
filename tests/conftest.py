import os

# Qt must never try to open a real display in tests (CI has none).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Keep torch from oversubscribing the 2 CI cores when several workers/processes run.
os.environ.setdefault("OMP_NUM_THREADS", "2")

import gc

import pytest


@pytest.fixture(autouse=True)
def _collect_on_the_main_thread():
    """Once a studio window has switched automatic GC off (studio.gcguard), the UI thread collects
    on a timer; between tests no event loop runs, so collect here, on pytest's (the UI) thread."""
    yield
    if not gc.isenabled():
        from studio.gcguard import collect_due

        collect_due()
