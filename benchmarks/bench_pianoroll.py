"""Piano-roll repaint cost while scrolling, with 5,000 notes (target: ≤ 16 ms per frame).

    QT_QPA_PLATFORM=offscreen uv run python benchmarks/bench_pianoroll.py [--notes N] [--frames F]

Each frame scrolls the view (as a scrollbar drag would) and synchronously repaints the whole
editor (grid, ruler, keyboard, velocity lane). Printed: ms/frame (mean, median, p95, max)
at the default zoom, zoomed out so that every note is on screen (worst case), and for the
grid alone. Also times one edit on the full sketch (transpose 500 notes + undo).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PySide6.QtCore import QEvent, QObject  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

import studio  # noqa: E402,F401 - applies the None-refcount guard before Qt is used
from engine.music import Clip, Note  # noqa: E402


def make_clip(n_notes: int, seed: int = 0) -> Clip:
    """A dense piano texture: chords and runs across ~7 octaves, 4 notes per beat on average."""
    rng = random.Random(seed)
    ppq = 480
    notes: dict[tuple[int, int], Note] = {}
    tick = 0
    while len(notes) < n_notes:
        for _ in range(rng.randint(1, 6)):
            pitch = rng.randint(28, 100)
            notes[(tick, pitch)] = Note(tick, pitch, rng.choice([60, 120, 240, 480, 960]), rng.randint(30, 127))
        tick += rng.choice([60, 120, 120, 240])
    return Clip(sorted(notes.values())[:n_notes], ppq)


def stats(samples: list) -> str:
    """Wall-clock figures, plus the UI thread's CPU time (meaningful when the machine is busy)."""
    wall = sorted((s[0] if isinstance(s, tuple) else s) * 1000 for s in samples)
    p95 = wall[min(len(wall) - 1, int(0.95 * len(wall)))]
    text = (f"mean {statistics.mean(wall):6.2f}  median {statistics.median(wall):6.2f}  p95 {p95:6.2f}  "
            f"max {wall[-1]:6.2f} ms/frame")
    if isinstance(samples[0], tuple):
        text += f"  (CPU mean {statistics.mean(s[1] for s in samples) * 1000:5.2f} ms)"
    return text


class PaintCounter(QObject):
    """Counts paint events, to prove each measured frame really painted."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Paint:
            self.count += 1
        return False


def scroll_frames(app, grid, frames: int, step_px: int, force_widget=None) -> list[float]:
    """One frame = move the scrollbar (as a drag does) and let Qt paint what became dirty.

    With `force_widget`, that whole widget is repainted synchronously instead (a harsher
    measure: it also repaints parts that a scroll leaves alone, like the keyboard).
    """
    bar = grid.horizontalScrollBar()
    times = []
    value = 0
    for _ in range(frames):
        value += step_px
        if value > bar.maximum():
            value = 0
        t0, c0 = time.perf_counter(), time.thread_time()
        bar.setValue(value)
        if force_widget is not None:
            force_widget.repaint()
        app.processEvents()
        times.append((time.perf_counter() - t0, time.thread_time() - c0))
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notes", type=int, default=5000)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args()

    app = QApplication.instance() or QApplication(sys.argv[:1])
    from studio.editor.document import SketchDocument
    from studio.editor.editor import PianoRollEditor
    from studio.theme import apply_dark_theme

    apply_dark_theme(app)
    clip = make_clip(args.notes)
    doc = SketchDocument(clip)
    editor = PianoRollEditor(doc)
    editor.resize(args.width, args.height)
    editor.show()
    app.processEvents()
    grid = editor.grid
    grid.scroll_to_pitch(64)
    doc.set_selection(clip.notes[::10])  # some selected notes are drawn differently

    print(f"piano roll: {len(clip.notes)} notes over {clip.num_bars} bars, {args.width}x{args.height} px, "
          f"Qt platform {app.platformName()}")
    counter = PaintCounter()
    grid.viewport().installEventFilter(counter)
    visible = lambda: len(grid._arrays.visible(*grid.visible_tick_range(), 0, 127))  # noqa: E731
    results = {}

    def run(label: str, step_px: int, force=None) -> None:
        scroll_frames(app, grid, 10, step_px, force)  # warm up
        counter.count = 0
        times = scroll_frames(app, grid, args.frames, step_px, force)
        assert counter.count >= args.frames, f"only {counter.count} paints in {args.frames} frames"
        results[label] = times
        print(f"  {label:<48} {stats(times)}")

    print(f"default zoom ({grid.geo.px_per_quarter:g} px per quarter, ~{visible()} notes on screen):")
    run("default zoom: scroll (grid+ruler+lane repaint)", 24)
    run("default zoom: whole editor forced to repaint", 24, editor)
    editor.zoom_to_fit()
    editor.geo.zoom_y(-20)
    app.processEvents()
    print(f"zoomed out to fit ({visible()} of {len(clip.notes)} notes on screen, "
          f"scroll range {grid.horizontalScrollBar().maximum()} px):")
    run("zoomed out: scroll (grid+ruler+lane repaint)", 4)
    run("zoomed out: whole editor forced to repaint", 4, editor)
    print(f"  tiles rendered in total: grid {grid.tiles.rendered}, velocity lane {editor.velocity_lane.tiles.rendered}")
    cold = []
    for _ in range(10):  # an edit invalidates the cache: the next frame renders every tile
        grid._version += 1
        t0 = time.perf_counter()
        grid.viewport().repaint()
        cold.append(time.perf_counter() - t0)
    print(f"  {'full grid re-render after an edit':<48} {stats(cold)}")

    doc.set_selection(clip.notes[:500])
    t0 = time.perf_counter()
    editor.transpose(1)
    app.processEvents()
    t_edit = time.perf_counter() - t0
    t0 = time.perf_counter()
    doc.undo_stack.undo()
    app.processEvents()
    t_undo = time.perf_counter() - t0
    print(f"  transpose 500 of {len(clip.notes)} notes: {t_edit * 1000:.1f} ms; undo: {t_undo * 1000:.1f} ms")
    scrolls = [v for k, v in results.items() if "forced" not in k]
    worst = max(statistics.mean(s[0] for s in t) for t in scrolls)
    worst_cpu = max(statistics.mean(s[1] for s in t) for t in scrolls)
    print(f"target ≤ 16 ms/frame while scrolling: wall {'met' if worst <= 0.016 else 'NOT met'} "
          f"(worst mean {worst * 1000:.2f} ms), UI-thread CPU {'met' if worst_cpu <= 0.016 else 'NOT met'} "
          f"(worst mean {worst_cpu * 1000:.2f} ms); machine load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
