"""Bar/beat positions of a clip in a tick window (for grid lines, the ruler and readouts)."""

from __future__ import annotations

import math
from collections.abc import Iterator

from engine.music import Clip

BAR, BEAT, SUB = 2, 1, 0


def _segments(clip: Clip) -> Iterator[tuple[int, int | None, int, int, int]]:
    """(segment start, segment end or None, ticks per bar, ticks per beat, bars before it)."""
    bars_before = 0
    sigs = clip.time_signatures
    for i, ts in enumerate(sigs):
        start = ts.tick
        end = sigs[i + 1].tick if i + 1 < len(sigs) else None
        bar = max(1, ts.ticks_per_bar(clip.ppq))
        beat = max(1, ts.ticks_per_beat(clip.ppq))
        yield start, end, bar, beat, bars_before
        if end is not None:
            bars_before += math.ceil((end - start) / bar)


def grid_lines(clip: Clip, t0: float, t1: float, sub_step: float | None) -> Iterator[tuple[float, int, int]]:
    """(tick, kind, bar index) for every line in [t0, t1]; kind is BAR, BEAT or SUB.

    `sub_step` (ticks) adds subdivision lines; None for bars and beats only.
    """
    for start, end, bar, beat, bars_before in _segments(clip):
        seg_end = t1 if end is None else min(t1, end)
        if seg_end < t0 and end is not None:
            continue
        if start > t1:
            break
        k = max(0, math.floor((t0 - start) / bar))
        bar_tick = start + k * bar
        while bar_tick <= seg_end and (end is None or bar_tick < end):
            bar_index = bars_before + k
            yield bar_tick, BAR, bar_index
            bar_end = bar_tick + bar if end is None else min(bar_tick + bar, end)
            if sub_step and sub_step < beat:
                n = 1
                while True:
                    t = bar_tick + n * sub_step
                    if t >= bar_end - 0.5 or t > t1:
                        break
                    # A subdivision that lands on a beat is drawn as a beat.
                    rel = n * sub_step
                    kind = BEAT if abs(rel / beat - round(rel / beat)) < 1e-6 else SUB
                    if t >= t0:
                        yield t, kind, bar_index
                    n += 1
            else:
                t = bar_tick + beat
                while t < bar_end and t <= t1:
                    if t >= t0:
                        yield t, BEAT, bar_index
                    t += beat
            k += 1
            bar_tick = start + k * bar


def position_of(clip: Clip, tick: float) -> tuple[int, int, int]:
    """(bar, beat, tick within beat), bar and beat 1-based, for the position display."""
    tick = max(0.0, tick)
    found = (1, 1, 0)
    for start, end, bar, beat, bars_before in _segments(clip):
        if tick < start:
            break
        rel = tick - start
        k = int(rel // bar)
        in_bar = rel - k * bar
        b = int(in_bar // beat)
        found = (bars_before + k + 1, b + 1, int(in_bar - b * beat))
    return found
