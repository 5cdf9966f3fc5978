"""MIDI clock: follow a DAW's (24 ppqn, Start/Stop/Continue, Song Position Pointer) or lead one.

Pure logic on timestamps, no I/O and no threads: the scheduler (`engine.live.scheduler`) feeds it
the exact arrival time of every real-time message and asks it where beats fall. Times are seconds
on the scheduler's clock (a JACK frame counter divided by the sample rate, or `time.monotonic()`);
beats are quarter notes from Start (beat 0 = the first clock tick after Start, as the MIDI 1.0
spec has playback begin on that tick).

Following: the tempo is the least-squares slope of the last `window` tick times (≥ 24 ticks, one
beat: jitter of single ticks averages out, and a tempo change is fully tracked one beat later).
Positions are counted in ticks from the anchor the first tick after Start/Continue sets; Song
Position Pointer (in sixteenths, 6 ticks each) moves that position while stopped.

Leading: `ClockLeader` turns a tempo and a start time into the clock messages a DAW follows.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

PPQN = 24  # MIDI clock ticks per quarter note
TICKS_PER_SIXTEENTH = PPQN // 4  # Song Position Pointer counts sixteenths
CLOCK, START, CONTINUE, STOP, SONG_POSITION = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2
MAX_SONG_POSITION = 0x3FFF  # 14 bits of sixteenths


def song_position_message(beat: float) -> bytes:
    """The Song Position Pointer for `beat` (rounded down to a sixteenth; 14 bits, LSB first)."""
    sixteenths = max(0, min(MAX_SONG_POSITION, int(beat * 4 + 1e-9)))
    return bytes((SONG_POSITION, sixteenths & 0x7F, sixteenths >> 7))


def song_position_beats(lsb: int, msb: int) -> float:
    """The beat a Song Position Pointer's two data bytes name."""
    return ((msb & 0x7F) << 7 | (lsb & 0x7F)) / 4


class ClockFollower:
    """Where the beat is, from a stream of MIDI real-time messages and their arrival times.

    `on_message(data, t)` takes every message (others are ignored); `beat_at(t)` / `time_of_beat(b)`
    map between the two while the clock runs; `bpm` is the measured tempo (None before two ticks);
    `locked` once a full window of ticks was measured and the last one is recent. `on_stop` is called
    on Stop (a caller silences every sounding note there), `on_start(beat)` on Start/Continue's first tick.
    """

    def __init__(self, window: int = PPQN, on_stop: Callable[[], None] | None = None,
                 on_start: Callable[[float], None] | None = None):
        if window < PPQN:
            raise ValueError(f"the tempo window must span at least {PPQN} ticks (one beat)")
        self.window = window
        self.on_stop = on_stop
        self.on_start = on_start
        self._ticks: deque[float] = deque(maxlen=window + 1)  # times of the last ticks (running or not)
        self.running = False
        self._pending = False  # Start/Continue seen: the next tick is the anchor
        self._position = 0  # ticks from beat 0 of the last tick while running (or SPP while stopped)
        self._last_tick: float | None = None
        self.ticks_received = 0

    # ------------------------------------------------------------------ input
    def on_message(self, data: bytes | list[int], t: float) -> None:
        if not data:
            return
        status = data[0]
        if status == CLOCK:
            self._tick(t)
        elif status == START:
            self._position, self._pending, self.running = 0, True, False
        elif status == CONTINUE:
            self._pending, self.running = True, False
        elif status == STOP:
            was = self.running or self._pending
            self.running = self._pending = False
            if was and self.on_stop:
                self.on_stop()
        elif status == SONG_POSITION and len(data) >= 3 and not self.running:
            self._position = int(song_position_beats(data[1], data[2]) * PPQN)

    def _tick(self, t: float) -> None:
        self.ticks_received += 1
        self._ticks.append(t)
        if self._pending:
            self._pending, self.running = False, True
            self._last_tick = t
            if self.on_start:
                self.on_start(self._position / PPQN)
        elif self.running:
            self._position += 1
            self._last_tick = t

    # ------------------------------------------------------------------ tempo
    @property
    def seconds_per_tick(self) -> float | None:
        """Least-squares slope of tick time over tick index across the window."""
        n = len(self._ticks)
        if n < 2:
            return None
        mean_i = (n - 1) / 2
        ts = list(self._ticks)
        mean_t = sum(ts) / n
        num = sum((i - mean_i) * (t - mean_t) for i, t in enumerate(ts))
        den = sum((i - mean_i) ** 2 for i in range(n))
        slope = num / den
        return slope if slope > 0 else None

    @property
    def bpm(self) -> float | None:
        spt = self.seconds_per_tick
        return None if spt is None else 60.0 / (PPQN * spt)

    def locked(self, now: float) -> bool:
        """A full window measured and the last tick no later than three tick lengths ago. A tick may carry
        a time slightly after `now` (JACK stamps a cycle's events with their frames, up to a period ahead of
        the frame clock another thread reads): up to a tick length and 50 ms ahead still counts."""
        spt = self.seconds_per_tick
        return (spt is not None and len(self._ticks) > self.window
                and -(spt + 0.05) <= now - self._ticks[-1] <= 3 * spt)

    # ------------------------------------------------------------------ position
    @property
    def position_beats(self) -> float:
        """Beat of the last tick while running; the Song Position while stopped."""
        return self._position / PPQN

    def beat_at(self, t: float) -> float | None:
        """The beat at time `t` (extrapolated from the last tick at the measured tempo); None while stopped."""
        spt = self.seconds_per_tick
        if not self.running or self._last_tick is None or spt is None:
            return None
        return (self._position + (t - self._last_tick) / spt) / PPQN

    def time_of_beat(self, beat: float) -> float | None:
        spt = self.seconds_per_tick
        if not self.running or self._last_tick is None or spt is None:
            return None
        return self._last_tick + (beat * PPQN - self._position) * spt


@dataclass
class ClockLeader:
    """The clock messages of a transport that starts at `start_time` on `start_beat` at `bpm`.

    `messages(t0, t1)` lists (time, message) for ticks in [t0, t1): on a fresh start SPP and Start (or
    Continue from a later beat) lie at the first tick's time, before it, as DAWs expect them.
    """

    bpm: float
    start_time: float
    start_beat: float = 0.0

    def __post_init__(self):
        if not 1.0 <= self.bpm <= 999.0:
            raise ValueError("bpm must be between 1 and 999")
        self._announced = False

    @property
    def seconds_per_tick(self) -> float:
        return 60.0 / (self.bpm * PPQN)

    def time_of_beat(self, beat: float) -> float:
        return self.start_time + (beat - self.start_beat) * 60.0 / self.bpm

    def beat_at(self, t: float) -> float:
        return self.start_beat + (t - self.start_time) * self.bpm / 60.0

    def messages(self, t0: float, t1: float) -> list[tuple[float, bytes]]:
        out: list[tuple[float, bytes]] = []
        if not self._announced and self.start_time < t1:
            out.append((self.start_time, song_position_message(self.start_beat)))
            out.append((self.start_time, bytes((START if self.start_beat == 0 else CONTINUE,))))
            self._announced = True
        spt = self.seconds_per_tick
        first = max(0, int((t0 - self.start_time) / spt - 1e-9))
        k = first
        while True:
            t = self.start_time + k * spt
            if t >= t1:
                break
            if t >= t0:
                out.append((t, bytes((CLOCK,))))
            k += 1
        return out
