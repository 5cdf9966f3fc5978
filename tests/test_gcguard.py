"""studio.gcguard: cycles are collected on the UI thread, never on a worker thread."""

import gc
import threading

from studio.gcguard import install_main_thread_gc


class _Cycle:
    def __init__(self, record):
        self.me = self
        self.record = record

    def __del__(self):
        self.record.append(threading.current_thread() is threading.main_thread())


def test_worker_allocations_do_not_collect_and_the_ui_thread_does(qapp, qtbot):
    install_main_thread_gc(qapp)  # stays installed, as it would once any studio window exists
    assert not gc.isenabled()
    gc.collect()
    collected_on_main = []
    for _ in range(50):
        _Cycle(collected_on_main)
    kept = []

    def allocate():  # far past every generation's threshold: CPython would collect on this thread
        kept.extend([object()] for _ in range(gc.get_threshold()[0] * gc.get_threshold()[1] * 3))

    worker = threading.Thread(target=allocate)
    worker.start()
    worker.join()
    assert collected_on_main == []  # nothing was collected on the worker thread
    qtbot.waitUntil(lambda: len(collected_on_main) == 50, timeout=5000)  # the UI thread's timer did it
    assert all(collected_on_main)
