"""Latency from clicking "Continue" to the first ghost note painted on the roll (target: ≤ 300 ms).

    QT_QPA_PLATFORM=offscreen uv run python benchmarks/bench_first_notes.py [--model DIR] [--runs N]

Starts the local CPU host (`smart serve` on 127.0.0.1, as the studio does) with `--model DIR`, or
with a freshly created random-weight model (`--config tiny|paper`) when no directory is given (the shipped default model is used
when it exists and `--model default` is passed). Then, in a real MainWindow (offscreen), it selects
an 8-bar sketch, clicks the panel's Continue button and measures, per run:

- click → first ghost note painted (the overlay's paint that first shows a candidate note), and
- click → first `note` event received by the worker thread (network + decode, without the UI).

Printed: each run and the median / min / max. Host startup is excluded (the studio starts its host
in the background when it opens).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import studio  # noqa: E402,F401 - applies the None-refcount guard before Qt is used
from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from engine.music import Clip, Note  # noqa: E402
from engine.project import Project  # noqa: E402


def sketch() -> Clip:
    pitches = [60, 64, 67, 72, 62, 65, 69, 74, 64, 67, 71, 76, 60, 64, 67, 72]
    return Clip([Note(i * 480, pitches[i % 16], 400, 80) for i in range(32)], ppq=480)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory, or 'default' for the shipped model "
                                                      "(default: a new tiny model)")
    parser.add_argument("--config", default="tiny", choices=["tiny", "paper"],
                        help="size of the fresh random-weight model when --model is not given")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--bars", type=int, default=2)
    parser.add_argument("--decode-weights", default=None, choices=["auto", "model", "int8", "fp16"],
                        help="the host's decoding weights (passed as $SMART_DECODE_WEIGHTS; default: its own, auto)")
    args = parser.parse_args()
    if args.decode_weights:
        os.environ["SMART_DECODE_WEIGHTS"] = args.decode_weights  # the local host inherits the environment

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from studio.host.connection import LOCAL, REMOTE, HostConnection
    from studio.mainwindow import MainWindow
    from studio.theme import apply_dark_theme

    apply_dark_theme(app)
    tmp = Path(tempfile.mkdtemp(prefix="bench-first-notes-"))
    if args.model is None:
        from engine.policy import Policy

        model_dir = tmp / args.config
        Policy.create(args.config, seed=0).save(model_dir)
        label = f"{args.config} (random weights)"
    elif args.model == "default":
        from engine.policy import DEFAULT_MODEL_DIR

        model_dir, label = DEFAULT_MODEL_DIR, "default"
    else:
        model_dir, label = Path(args.model), args.model

    host = HostConnection()
    host.configure(LOCAL, model_dir=str(model_dir))
    t0 = time.monotonic()
    host.connect_host()
    while host.state == "connecting":
        app.processEvents()
        time.sleep(0.01)
    if not host.connected:
        print(f"the local host did not start: {host.error}", file=sys.stderr)
        return 1
    print(f"local host up in {time.monotonic() - t0:.1f} s: device {host.device()}, model {host.model_name()}")

    settings = QSettings(str(tmp / "settings.ini"), QSettings.IniFormat)
    window = MainWindow(settings=settings, recovery_dir=tmp / "recovery", audio=False, interactive=False)
    window.resize(1400, 860)
    window.show()
    app.processEvents()
    panel = window.generate_panel
    panel.set_host(REMOTE, url=host.local.url, token=host.local.token)
    while panel.host.state == "connecting":
        app.processEvents()
        time.sleep(0.01)
    window.load_project(Project(clip=sketch()), None)
    window.document.select_all()
    window.editor.grid.scroll_to_tick(4 * 480 * 6, margin_px=0)  # the continuation point is on screen
    panel.spin_candidates.setValue(args.candidates)
    panel.spin_bars.setValue(args.bars)
    panel.chk_score.setChecked(False)  # scores come after the notes; they do not change the first-note latency
    app.processEvents()

    painted_ms, event_ms = [], []
    for run in range(args.runs + 1):  # run 0 warms up the host (first decode allocates)
        panel.spin_seed.setValue(100 + run)
        stamp: list[float] = []
        conn = panel.ghosts.first_painted.connect(lambda t: stamp.append(t))
        click = time.monotonic()
        QTest.mouseClick(panel.btn_continue, Qt.LeftButton)
        job = panel.session.job
        deadline = click + 60
        while not stamp and time.monotonic() < deadline:
            app.processEvents()
            if panel.session.job is None:  # finished: the last paints are already processed
                app.processEvents()
                break
        panel.ghosts.first_painted.disconnect(conn)
        if stamp and job is not None and job.first_note_at is not None:
            if run > 0:
                painted_ms.append((stamp[0] - click) * 1000)
                event_ms.append((job.first_note_at - click) * 1000)
                print(f"run {run}: first ghost note painted {painted_ms[-1]:6.1f} ms after the click "
                      f"(first note event {event_ms[-1]:6.1f} ms)")
        else:
            print(f"run {run}: no notes (the model wrote none for this seed)")
        while panel.session.job is not None:
            app.processEvents()
            time.sleep(0.005)
    window.shutdown()
    window.hide()
    host.shutdown()
    if not painted_ms:
        print("no measurements", file=sys.stderr)
        return 1
    print(f"\nmodel {label}, {args.candidates} candidates × {args.bars} bars, CPU host on 127.0.0.1")
    print(f"click → first ghost note painted: median {statistics.median(painted_ms):.1f} ms, "
          f"min {min(painted_ms):.1f}, max {max(painted_ms):.1f} (target ≤ 300 ms)")
    print(f"click → first note event (worker): median {statistics.median(event_ms):.1f} ms")
    return 0 if statistics.median(painted_ms) <= 300 else 2


if __name__ == "__main__":
    sys.exit(main())
