"""Renderer speed: real-time factor (seconds of audio per second of wall time).

    uv run python benchmarks/bench_render.py [--clips 8] [--seconds 30]

Clips: the first POP909 songs (piano track mix, cropped to --seconds) when the data set is at
/work/shared/datasets/pop909, plus dense procedural piano clips (chords + running melody).
Target: >= 200x real time per core at 16 kHz.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.music import Clip, MidiFileError, Note, TempoChange  # noqa: E402
from engine.render import RenderPool, load_synth, render  # noqa: E402

POP909 = Path("/work/shared/datasets/pop909")


def procedural_clip(seed: int, seconds: float, bpm: float = 110.0) -> Clip:
    """Dense piano texture: a 4-note chord every beat plus a melody note every 8th."""
    rng = np.random.default_rng(seed)
    ppq, notes = 480, []
    beats = int(seconds * bpm / 60)
    for beat in range(beats):
        root = int(rng.integers(40, 56))
        for interval in (0, 7, 12, 16):
            notes.append(Note(beat * ppq, root + interval, ppq, int(rng.integers(50, 90))))
        for half in range(2):
            notes.append(Note(beat * ppq + half * ppq // 2, int(rng.integers(64, 90)), ppq // 2,
                              int(rng.integers(60, 110))))
    return Clip(notes, ppq, [TempoChange(0, bpm)])


def pop909_clips(count: int) -> list[Clip]:
    clips = []
    if not POP909.is_dir():
        return clips
    for folder in sorted(p for p in POP909.iterdir() if p.is_dir()):
        midi = folder / f"{folder.name}.mid"
        if not midi.is_file():
            continue
        try:
            clip, _ = Clip.from_midi(midi, mode="piano")
        except MidiFileError as exc:
            print(f"  skipped {midi.name}: {exc}")
            continue
        clips.append(clip)
        if len(clips) == count:
            break
    return clips


def notes_per_second(clip: Clip, seconds: float) -> float:
    return sum(1 for n in clip.notes if clip.seconds_at(n.start) < seconds) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=8, help="clips per set")
    parser.add_argument("--seconds", type=float, default=30.0, help="render length per clip")
    args = parser.parse_args()

    print(f"cores available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.2f} "
          "(other busy processes lower the pool figure)")
    start = time.perf_counter()
    for _ in range(10):
        load_synth()
    print(f"load_synth (shipped piano): {(time.perf_counter() - start) / 10 * 1000:.1f} ms")

    sets = {"procedural": [procedural_clip(i, args.seconds) for i in range(args.clips)]}
    pop = pop909_clips(args.clips)
    if pop:
        sets["pop909"] = pop
    else:
        print(f"POP909 not found at {POP909}; procedural clips only")

    render(sets["procedural"][0], 16000, seconds=1.0)  # load the cached synth outside the timing
    with RenderPool(processes=2) as pool:
        pool.render(sets["procedural"][:2], 16000, seconds=1.0)  # start and warm the workers
        for name, clips in sets.items():
            density = np.mean([notes_per_second(c, args.seconds) for c in clips])
            audio_seconds = len(clips) * args.seconds
            print(f"\n{name}: {len(clips)} clips x {args.seconds:.0f} s, {density:.1f} notes/s")
            for rate in (16000, 44100):
                start, cpu_start = time.perf_counter(), time.process_time()
                serial = [render(c, rate, seconds=args.seconds) for c in clips]
                single, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                print(f"  {rate / 1000:g} kHz, 1 process : {audio_seconds / single:7.0f}x real time "
                      f"(wall), {audio_seconds / cpu:7.0f}x per CPU-second")
            start = time.perf_counter()
            pooled = pool.render(clips, 16000, seconds=args.seconds)
            elapsed = time.perf_counter() - start
            assert all(np.array_equal(a, b) for a, b in zip(pooled, [render(c, 16000, seconds=args.seconds) for c in clips]))
            print(f"  16 kHz, pool of 2: {audio_seconds / elapsed:7.0f}x real time (warm pool)")
            del serial

    start = time.perf_counter()
    with RenderPool(processes=2) as pool:
        pool.render(sets["procedural"], 16000, seconds=args.seconds)
    cold = time.perf_counter() - start
    print(f"\nrender_many-style cold pool (start 2 workers + render {len(sets['procedural'])} clips): {cold:.2f} s")


if __name__ == "__main__":
    main()
