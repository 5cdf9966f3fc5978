import os
import sys

# Qt must never try to open a real display in tests (CI has none).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# One torch thread per test process: the models under test are tiny, so extra threads only add
# synchronisation, and on a shared 2-core machine two threads per process made a millisecond test
# take a minute. Forced (not setdefault) so a shell's OMP_NUM_THREADS cannot slow the suite; a test
# that wants more threads sets them itself. Subprocesses the tests start inherit it.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import gc

import pytest


def pytest_runtest_setup(item):
    # torch reads OMP_NUM_THREADS when it is first imported; a test that raised the thread count
    # and did not restore it must not slow the next one. torch is not imported here: the studio
    # tests assert it never loads in their process.
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _collect_on_the_main_thread():
    """Once a studio window has switched automatic GC off (studio.gcguard), the UI thread collects
    on a timer; between tests no event loop runs, so collect here, on pytest's (the UI) thread."""
    yield
    if not gc.isenabled():
        from studio.gcguard import collect_due

        collect_due()


def pytest_runtest_teardown(item):
    # accelerate keeps one process-wide AcceleratorState; a trainer that chose bf16 (GRPO on a CPU
    # with native bf16) would make the next test's Accelerator(mixed_precision="no") raise. Each
    # training test starts from a fresh state, as its own `smart` process would.
    state = sys.modules.get("accelerate.state")
    if state is not None:
        state.AcceleratorState._reset_state(reset_partial_state=True)
