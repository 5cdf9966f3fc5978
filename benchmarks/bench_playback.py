"""How much of each audio block the playback callback needs (engine.playback.Player._process).

Renders a dense piano clip offline through `Player.render_block` (the callback's code) and
reports per-block time against the block's real-time budget. Run:

    uv run python benchmarks/bench_playback.py [--seconds 20] [--blocksize 256]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from engine.music import Clip, Note
from engine.playback import Player


def dense_clip(seconds: float, ppq: int = 480, bpm: float = 120.0) -> Clip:
    """Sixteenth-note arpeggios over sustained four-note chords, with the metronome-ish density
    of a busy piano part (~16 notes/s plus 4 held voices)."""
    notes = []
    sixteenth = ppq // 4
    total = int(seconds * bpm / 60 * ppq)
    chords = [(48, 55, 60, 64), (45, 52, 57, 60), (41, 48, 53, 57), (43, 50, 55, 59)]
    for bar_start in range(0, total, 4 * ppq):
        chord = chords[(bar_start // (4 * ppq)) % len(chords)]
        notes += [Note(bar_start, p, 4 * ppq, 70) for p in chord]
        for k in range(16):
            pitch = chord[k % 4] + 12 * (1 + (k // 4) % 2)
            notes.append(Note(bar_start + k * sixteenth, pitch, sixteenth * 2, 60 + (k * 7) % 40))
    return Clip(notes, ppq)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--blocksize", type=int, default=256)
    parser.add_argument("--sample-rate", type=int, default=48000)
    args = parser.parse_args()

    player = Player(sample_rate=args.sample_rate, blocksize=args.blocksize)
    clip = dense_clip(args.seconds)
    player.set_clip(clip)
    player.set_metronome(True)
    player.set_loop(0, clip.end_tick // 2)
    player.play(0)
    blocks = int(args.seconds * args.sample_rate / args.blocksize)
    times = np.empty(blocks)
    for i in range(blocks):
        start = time.perf_counter()
        player.render_block(args.blocksize)
        times[i] = time.perf_counter() - start
    budget = args.blocksize / args.sample_rate
    print(f"{len(clip.notes)} notes, {blocks} blocks of {args.blocksize} frames at {args.sample_rate} Hz "
          f"(budget {budget * 1e3:.2f} ms/block)")
    print(f"per block: mean {times.mean() * 1e3:.3f} ms, median {np.median(times) * 1e3:.3f} ms, "
          f"p99 {np.percentile(times, 99) * 1e3:.3f} ms, max {times.max() * 1e3:.3f} ms")
    print(f"real-time load (mean / budget): {times.mean() / budget:.1%}; "
          f"worst block: {times.max() / budget:.1%}")


if __name__ == "__main__":
    main()
