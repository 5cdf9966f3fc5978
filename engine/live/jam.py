"""Jam: call and response with the model, in time with the clock.

Bars 1..L of every phrase are the musician's (heard on the live input), bars L+1..L+A the model's
answer, and so on, bar 1 starting on the clock's Start. The answer is generated *before* its bar
line, from what has been played until then (the last fraction of a beat may be missed), so its
first note is never late: generation starts `lead` seconds ahead, `lead` being 1.5× the slowest
generation measured so far (at least `MIN_LEAD_SECONDS`). The prompt is the musician's notes and
the earlier answers of the last `context_bars` bars.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from engine.live.scheduler import NOTE_OFF, NOTE_ON, LiveIO
from engine.music import Clip, Note, TempoChange, TimeSignature

PPQ = 480
MIN_LEAD_SECONDS = 0.15
RESTART = "restart"
POLL_SECONDS = 0.002

# (prompt clip, tick the answer starts at, bars to answer) -> the answer's notes, in the clip's ticks
Generator = Callable[[Clip, int, int], list[Note]]


@dataclass
class JamOptions:
    listen_bars: int = 2
    answer_bars: int = 2
    meter: tuple[int, int] = (4, 4)
    context_bars: int = 8
    max_answers: int | None = None

    def __post_init__(self):
        if not (1 <= self.listen_bars <= 16 and 1 <= self.answer_bars <= 16):
            raise ValueError("listen and answer bars must be between 1 and 16")
        n, d = self.meter
        if not (1 <= n <= 32 and d in (1, 2, 4, 8, 16, 32)):
            raise ValueError(f"unsupported meter {n}/{d}")
        if self.context_bars < self.listen_bars:
            raise ValueError("the context must hold at least the listened bars")

    @property
    def bar_beats(self) -> float:
        n, d = self.meter
        return n * 4 / d

    def answer_start(self, k: int) -> float:
        """Beat of answer k's first bar line (k from 0)."""
        return (k * (self.listen_bars + self.answer_bars) + self.listen_bars) * self.bar_beats

    def first_phrase_from(self, beat: float) -> int:
        """The first phrase whose listening bars start at or after `beat` (a transport (re)started there)."""
        phrase = (self.listen_bars + self.answer_bars) * self.bar_beats
        return max(0, math.ceil(beat / phrase - 1e-9))


@dataclass
class Answer:
    index: int  # from 1
    start_beat: float
    bars: int
    notes: list[tuple[float, int, int, float]]  # (beat, pitch, velocity, duration in beats)
    ready_ms_before: float
    generation_ms: float

    def as_json(self) -> dict:
        return {"answer": self.index, "start_beat": self.start_beat, "bars": self.bars,
                "notes": [[round(b, 4), p, v, round(d, 4)] for b, p, v, d in self.notes],
                "ready_ms_before": round(self.ready_ms_before, 1), "generation_ms": round(self.generation_ms, 1)}


@dataclass
class _Heard:
    notes: list[tuple[float, int, int, float]] = field(default_factory=list)
    open: dict[int, tuple[float, int]] = field(default_factory=dict)


class Jam:
    """Listens on `io`'s input, answers through `generate`, plays the answers on `io`'s output."""

    def __init__(self, io: LiveIO, generate: Generator, options: JamOptions,
                 on_answer: Callable[[Answer], None] | None = None, bpm_fallback: float = 120.0):
        self.io = io
        self.generate = generate
        self.options = options
        self.on_answer = on_answer
        self.bpm_fallback = bpm_fallback
        self.heard = _Heard()
        self.answers: list[Answer] = []
        self._played: list[tuple[float, int, int, float]] = []  # answer notes since the transport started
        self._starts = io.transport_starts
        self.lead_seconds = MIN_LEAD_SECONDS
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def warm_up(self) -> None:
        """One generation before the clock starts: loads caches and measures the first lead."""
        started = time.perf_counter()
        self.generate(self._prompt(self.options.answer_start(0)), int(self.options.listen_bars * self.options.bar_beats * PPQ),
                      self.options.answer_bars)
        self.lead_seconds = max(MIN_LEAD_SECONDS, 1.5 * (time.perf_counter() - started))

    # ------------------------------------------------------------------ listening
    def _listen(self) -> None:
        while True:
            try:
                ev = self.io.input_events.get_nowait()
            except Exception:
                return
            if ev.beat is None or len(ev.data) < 3:
                continue
            status, pitch, velocity = ev.data[0] & 0xF0, ev.data[1], ev.data[2]
            if status == NOTE_ON and velocity > 0:
                self.heard.open[pitch] = (ev.beat, velocity)
            elif status in (NOTE_OFF, NOTE_ON) and pitch in self.heard.open:
                start, vel = self.heard.open.pop(pitch)
                self.heard.notes.append((start, pitch, vel, max(ev.beat - start, 1 / 32)))

    def _prompt(self, answer_start: float, now_beat: float | None = None) -> Clip:
        o = self.options
        begin = max(0.0, answer_start - o.context_bars * o.bar_beats)
        held = [(s, p, v, max((now_beat or s) - s, 1 / 32)) for p, (s, v) in self.heard.open.items()]
        played = self.heard.notes + held + self._played
        notes = [Note(round((b - begin) * PPQ), p, max(1, round(d * PPQ)), v)
                 for b, p, v, d in played if begin <= b < answer_start]
        bpm = self.io.tempo or self.bpm_fallback
        return Clip(notes, PPQ, [TempoChange(0, min(max(bpm, 10.0), 400.0))],
                    [TimeSignature(0, o.meter[0], o.meter[1])])

    # ------------------------------------------------------------------ answering
    def answer(self, k: int) -> Answer | str | None:
        """Wait for answer k's trigger, generate it and schedule it; None when stopped first, RESTART
        when the DAW started the transport again (Start, or Continue from another position)."""
        o = self.options
        start_beat = o.answer_start(k)
        end_beat = start_beat + o.answer_bars * o.bar_beats
        while not self._stop.is_set():
            if self.io.transport_starts != self._starts:
                self._starts = self.io.transport_starts
                return RESTART
            self._listen()
            now = self.io.now()
            due = self.io.time_of_beat(start_beat)
            if due is not None and now >= due - self.lead_seconds:
                break
            time.sleep(POLL_SECONDS)
        else:
            return None
        begin = max(0.0, start_beat - o.context_bars * o.bar_beats)
        clip = self._prompt(start_beat, self.io.beat_at(self.io.now()))
        started = time.perf_counter()
        new = self.generate(clip, round((start_beat - begin) * PPQ), o.answer_bars)
        generation = time.perf_counter() - started
        notes = []
        for n in new:
            beat = begin + n.start / PPQ
            if start_beat <= beat < end_beat:
                notes.append((beat, n.pitch, n.velocity, min(n.duration / PPQ, end_beat - beat)))
        for beat, pitch, velocity, duration in notes:
            self.io.schedule_note(beat, pitch, velocity, duration)
        self._played += notes
        due = self.io.time_of_beat(start_beat)
        ready = (due - self.io.now()) * 1000 if due is not None else float("nan")
        self.lead_seconds = max(self.lead_seconds, MIN_LEAD_SECONDS, 1.5 * generation)
        result = Answer(k + 1, start_beat, o.answer_bars, notes, ready, generation * 1000)
        self.answers.append(result)
        if self.on_answer:
            self.on_answer(result)
        return result

    def run(self) -> list[Answer]:
        k, limit = 0, self.options.max_answers
        while not self._stop.is_set() and (limit is None or len(self.answers) < limit):
            result = self.answer(k)
            if result is None:
                break
            if result is RESTART:
                # A new take: forget what was played, count phrases from the position the DAW started at.
                self.heard, self._played = _Heard(), []
                k = self.options.first_phrase_from(self.io.start_beat)
                continue
            k += 1
        if limit is not None and len(self.answers) >= limit and self.answers:
            # Let the last answer play out before the caller silences everything.
            last = self.answers[-1]
            end = self.io.time_of_beat(last.start_beat + last.bars * self.options.bar_beats)
            while end is not None and self.io.now() < end and not self._stop.is_set():
                time.sleep(0.01)
        return self.answers


def policy_generator(policy, settings) -> Generator:
    """A `Generator` from an `engine.policy.Policy` and `GenerationSettings` (one candidate)."""
    from dataclasses import replace

    def generate(clip: Clip, at_tick: int, bars: int) -> list[Note]:
        candidates = policy.continue_clip(clip, replace(settings, candidates=1, bars=bars), at_tick=at_tick)
        return candidates[0].notes if candidates else []

    return generate
