"""Studio cold start: a fresh interpreter builds the main window (offscreen) and opens a MIDI file, then a
project; prints the wall time from interpreter start and the peak RSS, and which heavy modules got loaded.

    .venv/bin/python benchmarks/bench_studio_start.py [--runs 5] [--root DIR]

`--root` measures another checkout of the studio (e.g. the previous commit unpacked with `git archive`),
run by this same interpreter, so before/after figures come from one run on one machine state.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "trl", "audiobox_aesthetics")

# Runs in the child: `t0` is taken before any studio import (the interpreter's own start is measured by the
# parent as the process wall time).
CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
app = QApplication([])
from studio.mainwindow import MainWindow
tmp = sys.argv[1]
window = MainWindow(settings=QSettings(tmp + "/settings.ini", QSettings.IniFormat), recovery_dir=tmp + "/recovery",
                    audio=False, interactive=False)
window.show()
assert window.open_path(tmp + "/song.mid", ask=False)
app.processEvents()
t_midi = time.perf_counter() - t0
assert window.save_to(__import__("pathlib").Path(tmp + "/song.smartproj"))
assert window.open_path(tmp + "/song.smartproj", ask=False)
app.processEvents()
t_project = time.perf_counter() - t0
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
heavy = [m for m in %r if m in sys.modules]
window.shutdown()
print(json.dumps({"midi_s": t_midi, "project_s": t_project, "rss_mb": rss_mb, "heavy": heavy}))
""" % (HEAVY,)


def write_song(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from engine.music import Clip, Note

    pitches = [60, 64, 67, 72, 62, 65, 69, 74]
    clip = Clip([Note(i * 240, pitches[i % 8], 200, 80) for i in range(512)], ppq=480)  # 64 bars of eighths
    path.write_bytes(clip.to_midi_bytes())


def measure(root: Path, tmp: Path) -> dict:
    import time

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"child failed in {root}:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", action="append", type=Path, help="studio checkout(s) to measure (default: this one)")
    args = parser.parse_args()
    roots = args.root or [ROOT]
    if ROOT not in roots:
        roots = [*roots, ROOT]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        write_song(tmp / "song.mid")
        results: dict[Path, list[dict]] = {r: [] for r in roots}
        for _ in range(args.runs):  # interleaved, so a busy spell hits every checkout alike
            for root in roots:
                results[root].append(measure(root, tmp))
    print(f"{args.runs} cold starts each (offscreen, window + 64-bar MIDI file, then save + open a project)")
    for root, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("process_s", "midi_s", "project_s", "rss_mb")}
        heavy = sorted({m for r in runs for m in r["heavy"]})
        print(f"{root}: process {med['process_s']:.2f} s (min {min(r['process_s'] for r in runs):.2f}), "
              f"window+MIDI {med['midi_s']:.2f} s, +project {med['project_s']:.2f} s, peak RSS {med['rss_mb']:.0f} MB, "
              f"heavy modules loaded: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
