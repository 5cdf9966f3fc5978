"""Studio suites that run in their own interpreter.

The generate/train panel tests drive worker threads, a host subprocess and many Qt objects; in one
process together with the other studio suites, PySide6 6.12 on CPython 3.11 has crashed the whole
test session with a segfault (see the closing notes of the studio-generate issue). Running each such
suite in a fresh interpreter keeps every one of its assertions while a crash stays attributable to it.

Being separate processes, they need not wait their turn: when the session may use two or more CPUs, the
selected suites start in the background as soon as collection ends (one at a time, so they take one more
core, not all), and each test collects its suite's result. On one CPU they run in the test, as before.
"""

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ISOLATED_SUITES = sorted(p.name for p in TESTS.glob("studio_*_cases.py"))
SUITES_WITH_SLOW_TESTS = [s for s in ISOLATED_SUITES if "pytest.mark.slow" in (TESTS / s).read_text()]


def run_suite(suite: str, markers: str, started=lambda proc: None) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(TESTS.parent),
            "-m", markers, str(TESTS / suite)]
    with subprocess.Popen(args, cwd=TESTS.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        started(proc)
        try:
            out, err = proc.communicate(timeout=1500)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


class BackgroundSuites:
    """The selected suites run one after another on a thread while the rest of the session goes on."""

    def __init__(self) -> None:
        self.results: dict[tuple[str, str], subprocess.CompletedProcess | BaseException] = {}
        self.finished = threading.Condition()
        self.thread: threading.Thread | None = None
        self.running: subprocess.Popen | None = None
        self.stopping = False

    def start(self, runs: list[tuple[str, str]]) -> None:
        if self.thread is not None or not runs or len(os.sched_getaffinity(0)) < 2:
            return  # one CPU: the suites run in their tests, not beside the others
        self.pending = set(runs)
        self.thread = threading.Thread(target=self._run, args=(runs,), name="isolated-studio-suites", daemon=True)
        self.thread.start()

    def _run(self, runs) -> None:
        for run in runs:
            if self.stopping:
                break
            try:
                result = run_suite(*run, started=self._started)
            except BaseException as exc:  # a timeout, say: the test reports it
                result = exc
            with self.finished:
                self.results[run] = result
                self.finished.notify_all()

    def _started(self, proc: subprocess.Popen) -> None:
        self.running = proc

    def stop(self) -> None:
        """The session ends (or was interrupted): no suite goes on running without it."""
        self.stopping = True
        proc = self.running
        if self.thread is not None and proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # pytest's own Ctrl-C: its fixtures stop the hosts they started
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def result(self, suite: str, markers: str) -> subprocess.CompletedProcess:
        if self.thread is None or (suite, markers) not in self.pending:
            return run_suite(suite, markers)
        with self.finished:
            self.finished.wait_for(lambda: (suite, markers) in self.results)
        result = self.results[(suite, markers)]
        if isinstance(result, BaseException):
            raise result
        return result


BACKGROUND = BackgroundSuites()


# A suite's quick tests run in the default selection, its slow ones under the slow marker, so that
# `pytest -m slow` (which CI runs) reaches them too; exit code 5 means none were selected.
@pytest.mark.parametrize("suite, markers", [
    *[pytest.param(s, "not slow", id=s) for s in ISOLATED_SUITES],
    *[pytest.param(s, "slow", id=f"{s}-slow", marks=pytest.mark.slow) for s in SUITES_WITH_SLOW_TESTS],
])
def test_isolated_studio_suite(suite, markers):
    proc = BACKGROUND.result(suite, markers)
    ok = (0, 5) if markers == "slow" else (0,)
    assert proc.returncode in ok, f"{suite} failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
