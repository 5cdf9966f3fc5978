import os

# Qt must never try to open a real display in tests (CI has none).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Keep torch from oversubscribing the 2 CI cores when several workers/processes run.
os.environ.setdefault("OMP_NUM_THREADS", "2")
