"""The studio's worker threads: a `Worker` is a QObject on its own QThread whose signals reach the UI
queued; a `StreamWorker` reads one streamed host response (cancelling closes the stream, which breaks the
blocking read at once and makes the host stop that request's work); a `CallWorker` runs one host call, and
`Calls` runs a panel's calls and keeps every worker until its thread has ended."""

from __future__ import annotations

import threading
import time
from typing import Callable

from PySide6.QtCore import QObject, QThread, Signal

from engine.errors import first_line


class Worker(QObject):
    """Base: a QObject moved to its own QThread; `finished_job` fires last, whatever happened."""

    failed = Signal(str)
    progress = Signal(str, float)  # message, fraction (-1: unknown)
    finished_job = Signal()

    def __init__(self, name: str) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName(name)
        self.moveToThread(self._thread)
        self._thread.started.connect(self._main)
        self.finished_job.connect(self._thread.quit)
        self.started_at: float | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def running(self) -> bool:
        return self._thread.isRunning()

    def wait(self, ms: int = 30000) -> bool:
        return self._thread.wait(ms)

    def _main(self) -> None:
        try:
            self.run()
        except Exception as exc:  # every failure is reported, never raised into Qt
            if not self.cancelled:
                self.failed.emit(first_line(exc))
        finally:
            self.finished_job.emit()

    def run(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class StreamWorker(Worker):
    """A job that reads one streamed host response; cancelling closes the stream, which breaks the
    blocking read at once (and makes the host stop that request's work)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._stream = None
        self._lock = threading.Lock()

    def cancel(self) -> None:
        super().cancel()
        with self._lock:
            stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass

    def _hold(self, stream) -> bool:
        """Keep `stream` for cancel(); False (and the stream closed) when already cancelled."""
        with self._lock:
            self._stream = stream
        if self.cancelled:
            stream.close()
            return False
        return True


class CallWorker(Worker):
    """One host request (start, cancel, pause, resume, activate, list) off the UI thread; `result` its value."""

    result = Signal(object)

    def __init__(self, name: str, fn: Callable[[], object]) -> None:
        super().__init__(name)
        self.fn = fn

    def run(self) -> None:
        value = self.fn()
        if not self.cancelled:
            self.result.emit(value)


_ORPHANS: list = []  # workers still blocked in a request when the window closed


class Calls(QObject):
    """A panel's host calls on worker threads: each call's result or failure reaches its callbacks on the UI
    thread (through this QObject's slots: queued), and every worker — calls and any other `track`ed one —
    is kept referenced until its thread has ended."""

    failed = Signal(str, str)  # what, reason: a call without its own on_failed failed
    finished = Signal(object)  # a tracked worker's thread has ended (after it was let go)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.workers: set[Worker] = set()

    def run(self, name: str, fn: Callable[[], object], on_result=None, on_failed=None) -> CallWorker:
        """Run `fn` on a worker thread; `on_result(value)` / `on_failed(reason)` run on the UI thread."""
        worker = CallWorker(name, fn)
        worker.callbacks = (name, on_result, on_failed)
        worker.result.connect(self._on_result)
        worker.failed.connect(self._on_failed)
        self.track(worker)
        worker.start()
        return worker

    def track(self, worker: Worker) -> None:
        worker.finished_job.connect(self._on_finished)
        self.workers.add(worker)

    def _on_result(self, value) -> None:
        _name, on_result, _on_failed = getattr(self.sender(), "callbacks", (None, None, None))
        if on_result is not None:
            on_result(value)

    def _on_failed(self, reason: str) -> None:
        name, _on_result, on_failed = getattr(self.sender(), "callbacks", ("Request", None, None))
        if on_failed is not None:
            on_failed(reason)
        else:
            self.failed.emit(name, reason)

    def _on_finished(self) -> None:
        worker = self.sender()
        if worker is None:
            return
        worker.wait(2000)  # its thread is quitting: never drop a QThread that still runs
        self.workers.discard(worker)
        self.finished.emit(worker)

    def shutdown(self, wait_ms: int = 5000) -> None:
        """Window closing: cancel every worker and wait for it; one still blocked is kept (a QThread destroyed
        while it runs aborts the process)."""
        for worker in list(self.workers):
            worker.cancel()
        for worker in list(self.workers):
            if not worker.wait(wait_ms):
                _ORPHANS.append(worker)
        self.workers.clear()
