"""Studio suites that run in their own interpreter.

The generate/train panel tests drive worker threads, a host subprocess and many Qt objects; in one
process together with the other studio suites, PySide6 6.12 on CPython 3.11 has crashed the whole
test session with a segfault (see the closing notes of the studio-generate issue). Running each such
suite in a fresh interpreter keeps every one of its assertions while a crash stays attributable to it.

Each suite runs without pytest-xdist (`-n 0`): the session's workers (pyproject's addopts) already spread
the test files over the CPUs, and this file is one of them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ISOLATED_SUITES = sorted(p.name for p in TESTS.glob("studio_*_cases.py"))
SUITES_WITH_SLOW_TESTS = [s for s in ISOLATED_SUITES if "pytest.mark.slow" in (TESTS / s).read_text()]


def run_suite(suite: str, markers: str) -> subprocess.CompletedProcess:
    # The suite is a session of its own, not one of this session's xdist workers.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    args = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "--rootdir",
            str(TESTS.parent), "-m", markers, str(TESTS / suite)]
    return subprocess.run(args, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=1500)


# A suite's quick tests run in the default selection, its slow ones under the slow marker, so that
# `pytest -m slow` (which CI runs) reaches them too; exit code 5 means none were selected.
@pytest.mark.parametrize("suite, markers", [
    *[pytest.param(s, "not slow", id=s) for s in ISOLATED_SUITES],
    *[pytest.param(s, "slow", id=f"{s}-slow", marks=pytest.mark.slow) for s in SUITES_WITH_SLOW_TESTS],
])
def test_isolated_studio_suite(suite, markers):
    proc = run_suite(suite, markers)
    ok = (0, 5) if markers == "slow" else (0,)
    assert proc.returncode in ok, f"{suite} failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
