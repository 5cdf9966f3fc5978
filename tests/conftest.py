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

import contextlib
import gc
import socket
import threading
import time

import pytest


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): one worker per CPU this process may run on. xdist itself counts the
    machine's cores, so `taskset -c 1 uv run pytest` beside a pinned training run would start two workers
    on one core."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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


@contextlib.contextmanager
def serve(app):
    """Run `app` with uvicorn in a thread on a free loopback port; yields the base URL (the one helper of
    every test that serves a host app in-process: `from conftest import serve`)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
