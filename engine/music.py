"""The one note/clip model: notes in ticks with a PPQ, a tempo map and time signatures.

Everything in SMART Studio (editor, tokenizer, renderer, features, host, training) speaks
`Clip`. Standard MIDI Files are read and written through symusic; the piano handling of the
SMART paper (§3.1) lives here too, so training data and user files go through one path.
"""

from __future__ import annotations

import bisect
import errno
import glob
import math
import numbers
import os
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Literal

import symusic

from engine.errors import first_line

DEFAULT_PPQ = 480
DEFAULT_BPM = 120.0
# Beyond these a file is almost certainly broken (a 0 µs/quarter tempo, a corrupt meta event).
MIN_BPM, MAX_BPM = 10.0, 1000.0
# Files with more notes than this are refused: the editor, tokenizer and renderer are sized
# for piano sketches and pieces, not for dumps of whole MIDI libraries in one file.
MAX_NOTES = 50_000
MAX_FILE_BYTES = 32 * 1024 * 1024
# Musical bounds every clip keeps, checked where clips enter (MIDI files, JSON, projects) so that
# no bar or tick loop can run away: a Standard MIDI File states at most 0x7FFF ticks per quarter;
# a clip lasts at most MAX_CLIP_QUARTERS quarter notes (4 h 10 min at 120 bpm) and never past
# MAX_SMF_TICK, the largest gap one MIDI event can hold (symusic writes a far note's gap as one
# delta, and silently wraps a larger one).
MAX_PPQ = 0x7FFF
MAX_CLIP_QUARTERS = 30_000
MAX_SMF_TICK = 2**28 - 1
MAX_NUMERATOR = 255  # a MIDI time-signature numerator is one byte
MAX_DENOMINATOR = 64
MAX_MAP_EVENTS = 10_000  # tempo changes or time signatures in one clip
PIANO_PROGRAMS = range(0, 8)  # GM programs 1–8 (0-based here)
PIANO_PITCH_RANGE = (21, 108)
SUSTAIN_PEDAL_CC = 64


class MidiFileError(ValueError):
    """A MIDI file could not be read or is outside what the studio accepts."""


@dataclass(frozen=True, slots=True, order=True)
class Note:
    """One note. Times are in ticks of the owning clip's PPQ."""

    start: int
    pitch: int
    duration: int
    velocity: int = 80

    @property
    def end(self) -> int:
        return self.start + self.duration


@dataclass(frozen=True, slots=True, order=True)
class TempoChange:
    tick: int
    bpm: float


@dataclass(frozen=True, slots=True, order=True)
class TimeSignature:
    tick: int
    numerator: int
    denominator: int

    def ticks_per_beat(self, ppq: int) -> int:
        """Ticks of one beat (one 1/denominator note; 0 when shorter than a tick)."""
        return ppq * 4 // self.denominator

    def ticks_per_bar(self, ppq: int) -> int:
        return self.numerator * ppq * 4 // self.denominator

    def problem(self, ppq: int) -> str | None:
        """Why this meter cannot be used at `ppq` (one line), or None."""
        num, den = self.numerator, self.denominator
        if not 1 <= num <= MAX_NUMERATOR:
            return f"time signature {num}/{den} at tick {self.tick}: the numerator must be 1–{MAX_NUMERATOR}"
        if not (1 <= den <= MAX_DENOMINATOR and den & (den - 1) == 0):
            return (f"time signature {num}/{den} at tick {self.tick}: the denominator must be a power "
                    f"of two from 1 to {MAX_DENOMINATOR}")
        if self.ticks_per_bar(ppq) < 1:
            return f"time signature {num}/{den} at tick {self.tick}: a bar is shorter than one tick at PPQ {ppq}"
        return None


@dataclass
class ImportReport:
    """What happened to a file on its way into a clip (shown to the user / logged)."""

    tracks_total: int = 0
    tracks_used: int = 0
    tracks_dropped: list[str] = field(default_factory=list)
    duplicates_removed: int = 0
    out_of_range_removed: int = 0
    pedal_extended: int = 0
    messages: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(self.messages) if self.messages else "imported as is"


class TempoMap:
    """Tick <-> seconds on a tempo map: the one owner of the conversion (clips, playback, render).
    Built once per map; ticks may be fractional; before the first change the first tempo applies."""

    __slots__ = ("ticks", "seconds", "ticks_per_minute")

    def __init__(self, tempos: Iterable[TempoChange], ppq: int):
        tempos = sorted(tempos) or [TempoChange(0, DEFAULT_BPM)]
        self.ticks = [0] + [t.tick for t in tempos[1:]]
        self.ticks_per_minute = [t.bpm * ppq for t in tempos]
        self.seconds = [0.0]
        for k in range(1, len(tempos)):
            span = (self.ticks[k] - self.ticks[k - 1]) * 60.0 / self.ticks_per_minute[k - 1]
            self.seconds.append(self.seconds[-1] + span)

    def seconds_at(self, tick: float) -> float:
        i = max(bisect.bisect_right(self.ticks, tick) - 1, 0)
        return self.seconds[i] + (tick - self.ticks[i]) * 60.0 / self.ticks_per_minute[i]

    def tick_at(self, seconds: float) -> float:
        i = max(bisect.bisect_right(self.seconds, seconds) - 1, 0)
        return self.ticks[i] + (seconds - self.seconds[i]) * self.ticks_per_minute[i] / 60.0

    def seconds_of(self, ticks):
        """`seconds_at` over a numpy array of ticks."""
        import numpy as np

        ticks = np.asarray(ticks, dtype=np.float64)
        starts = np.asarray(self.ticks, dtype=np.float64)
        i = np.clip(np.searchsorted(starts, ticks, side="right") - 1, 0, None)
        return np.asarray(self.seconds)[i] + (ticks - starts[i]) * 60.0 / np.asarray(self.ticks_per_minute)[i]


@dataclass
class Clip:
    """A single-track piano clip: notes, tempo map, time signatures, in ticks at `ppq`."""

    notes: list[Note] = field(default_factory=list)
    ppq: int = DEFAULT_PPQ
    tempos: list[TempoChange] = field(default_factory=lambda: [TempoChange(0, DEFAULT_BPM)])
    time_signatures: list[TimeSignature] = field(default_factory=lambda: [TimeSignature(0, 4, 4)])

    def __post_init__(self) -> None:
        if isinstance(self.ppq, bool) or not isinstance(self.ppq, numbers.Integral) or not 1 <= self.ppq <= MAX_PPQ:
            raise MidiFileError(f"invalid PPQ {self.ppq}: must be a whole number from 1 to {MAX_PPQ}")
        self.ppq = int(self.ppq)
        _check_maps(self.ppq, self.tempos, self.time_signatures)
        if not self.tempos or self.tempos[0].tick != 0:
            first = self.tempos[0].bpm if self.tempos else DEFAULT_BPM
            self.tempos = [TempoChange(0, first)] + [t for t in self.tempos if t.tick > 0]
        if not self.time_signatures or self.time_signatures[0].tick != 0:
            first = self.time_signatures[0] if self.time_signatures else TimeSignature(0, 4, 4)
            self.time_signatures = [replace(first, tick=0)] + [
                t for t in self.time_signatures if t.tick > 0
            ]
        self.tempos.sort()
        self.time_signatures.sort()
        self.notes.sort()

    # ------------------------------------------------------------------ basic queries
    @property
    def end_tick(self) -> int:
        return max((n.end for n in self.notes), default=0)

    @property
    def bpm(self) -> float:
        """The opening tempo (the sketch tempo in the editor)."""
        return self.tempos[0].bpm

    @property
    def time_signature(self) -> TimeSignature:
        return self.time_signatures[0]

    def copy(self) -> "Clip":
        return Clip(list(self.notes), self.ppq, list(self.tempos), list(self.time_signatures))

    def with_notes(self, notes: Iterable[Note]) -> "Clip":
        return Clip(list(notes), self.ppq, list(self.tempos), list(self.time_signatures))

    # ------------------------------------------------------------------ time maps
    def tempo_map(self) -> "TempoMap":
        """The clip's tick <-> seconds map, for callers that convert many times (playback, render)."""
        return TempoMap(self.tempos, self.ppq)

    def seconds_at(self, tick: int | float) -> float:
        """Wall-clock seconds at `tick`, following the tempo map."""
        return self.tempo_map().seconds_at(tick)

    def tick_at(self, seconds: float) -> int:
        """Inverse of `seconds_at` (rounded down to a tick)."""
        return int(self.tempo_map().tick_at(seconds))

    @property
    def duration_seconds(self) -> float:
        return self.seconds_at(self.end_tick)

    def bar_starts(self, until_tick: int | None = None) -> list[int]:
        """Tick of every bar line from 0 up to (and including the bar containing) `until_tick`,
        at most up to the longest clip (`max_clip_tick`): the list stays bounded whatever is asked."""
        until = self.end_tick if until_tick is None else until_tick
        until = min(until, max_clip_tick(self.ppq))
        starts: list[int] = []
        sigs = self.time_signatures
        tick = 0
        for i, ts in enumerate(sigs):
            tick = max(tick, ts.tick)
            stop = sigs[i + 1].tick if i + 1 < len(sigs) else None
            step = max(1, ts.ticks_per_bar(self.ppq))  # validated ≥ 1; guards a clip mutated since
            while (stop is None or tick < stop) and tick <= until:
                starts.append(tick)
                tick += step
            if stop is None:
                break
        return starts or [0]

    def bar_index_at(self, tick: int) -> int:
        starts = self.bar_starts(tick)
        return bisect.bisect_right(starts, tick) - 1

    def bar_tick(self, bar: int) -> int:
        """Start tick of bar `bar` (0-based), extending the last time signature as needed."""
        ts = self.time_signatures[-1]
        starts = self.bar_starts(ts.tick)
        if bar < len(starts):
            return starts[bar]
        last = starts[-1]
        return last + (bar - len(starts) + 1) * ts.ticks_per_bar(self.ppq)

    @property
    def num_bars(self) -> int:
        if not self.notes:
            return 0
        return self.bar_index_at(max(self.end_tick - 1, 0)) + 1

    def time_signature_at(self, tick: int) -> TimeSignature:
        i = bisect.bisect_right([t.tick for t in self.time_signatures], tick) - 1
        return self.time_signatures[max(i, 0)]

    def tempo_at(self, tick: int) -> float:
        i = bisect.bisect_right([t.tick for t in self.tempos], tick) - 1
        return self.tempos[max(i, 0)].bpm

    # ------------------------------------------------------------------ edits (pure)
    def slice_ticks(self, start: int, end: int, *, shift_to_zero: bool = True) -> "Clip":
        """Notes starting in [start, end), cut at `end`; tempo/TS state carried to `start`."""
        notes = [
            replace(n, duration=max(1, min(n.end, end) - n.start))
            for n in self.notes
            if start <= n.start < end
        ]
        offset = start if shift_to_zero else 0
        tempos = [TempoChange(0 if not shift_to_zero else 0, self.tempo_at(start))]
        tempos += [TempoChange(t.tick - offset, t.bpm) for t in self.tempos if start < t.tick < end]
        sigs = [replace(self.time_signature_at(start), tick=0)]
        sigs += [replace(t, tick=t.tick - offset) for t in self.time_signatures if start < t.tick < end]
        if not shift_to_zero:
            tempos[0] = TempoChange(0, self.tempos[0].bpm)
            sigs[0] = self.time_signatures[0]
        return Clip([replace(n, start=n.start - offset) for n in notes], self.ppq, tempos, sigs)

    def slice_bars(self, first_bar: int, last_bar_exclusive: int) -> "Clip":
        return self.slice_ticks(self.bar_tick(first_bar), self.bar_tick(last_bar_exclusive))

    def last_bars(self, n_bars: int) -> "Clip":
        bars = self.num_bars
        return self.slice_bars(max(0, bars - n_bars), max(bars, 1))

    def transposed(self, semitones: int, pitch_range: tuple[int, int] = (0, 127)) -> "Clip":
        lo, hi = pitch_range
        return self.with_notes(
            replace(n, pitch=n.pitch + semitones)
            for n in self.notes
            if lo <= n.pitch + semitones <= hi
        )

    def resampled(self, ppq: int) -> "Clip":
        """The same music at another PPQ (ticks rescaled and rounded; durations ≥ 1)."""
        if ppq == self.ppq:
            return self.copy()
        f = ppq / self.ppq
        return Clip(
            [Note(round(n.start * f), n.pitch, max(1, round(n.duration * f)), n.velocity) for n in self.notes],
            ppq,
            [TempoChange(round(t.tick * f), t.bpm) for t in self.tempos],
            [replace(t, tick=round(t.tick * f)) for t in self.time_signatures],
        )

    # ------------------------------------------------------------------ symusic / SMF
    def to_score(self) -> symusic.Score:
        score = symusic.Score(self.ppq)
        track = symusic.Track(name="Piano", program=0, is_drum=False)
        track.notes = symusic.core.NoteTickList(
            [symusic.Note(n.start, n.duration, n.pitch, n.velocity) for n in self.notes]
        )
        score.tracks.append(track)
        score.tempos = symusic.core.TempoTickList(
            [symusic.Tempo(t.tick, float(t.bpm)) for t in self.tempos]
        )
        score.time_signatures = symusic.core.TimeSignatureTickList(
            [symusic.TimeSignature(t.tick, t.numerator, t.denominator) for t in self.time_signatures]
        )
        return score

    def to_midi_bytes(self) -> bytes:
        # symusic dumps to a path only; go through a temp file to hand back bytes.
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "clip.mid"
            self.to_score().dump_midi(str(path))
            return path.read_bytes()

    def save_midi(self, path: str | os.PathLike) -> None:
        """Write a Standard MIDI File atomically (temp file + rename)."""
        atomic_write_bytes(path, self.to_midi_bytes())

    @classmethod
    def from_midi(
        cls,
        source: str | os.PathLike | bytes,
        *,
        mode: Literal["user", "piano"] = "user",
        max_notes: int = MAX_NOTES,
        apply_sustain: bool = True,
    ) -> tuple["Clip", ImportReport]:
        """Read a Standard MIDI File into one piano clip.

        mode="user": every non-drum track becomes piano (and the report says so).
        mode="piano": the paper's training-data handling (§3.1) — only GM piano programs 1–8
        are kept, merged into one track.
        Both drop duplicated notes (same pitch and onset) and notes outside 21–108.
        Raises MidiFileError with a one-line reason for anything unreadable.
        """
        data = _read_source(source)
        _check_header(data)
        try:
            score = symusic.Score.from_midi(data)
        except Exception as exc:  # symusic raises RuntimeError/ValueError with C++ messages
            raise MidiFileError(f"not a readable MIDI file ({first_line(exc)})") from None
        return cls.from_score(score, mode=mode, max_notes=max_notes, apply_sustain=apply_sustain)

    @classmethod
    def from_score(
        cls,
        score: symusic.Score,
        *,
        mode: Literal["user", "piano"] = "user",
        max_notes: int = MAX_NOTES,
        apply_sustain: bool = True,
    ) -> tuple["Clip", ImportReport]:
        report = ImportReport(tracks_total=len(score.tracks))
        ppq = int(score.ticks_per_quarter)
        if not 1 <= ppq <= MAX_PPQ:
            raise MidiFileError(f"invalid PPQ {ppq} in the file header (accepted: 1–{MAX_PPQ})")
        last_tick = max_clip_tick(ppq)
        raw: list[Note] = []
        for track in score.tracks:
            label = track.name or f"program {track.program + 1}"
            if track.is_drum:
                report.tracks_dropped.append(f"{label} (drums)")
                continue
            if mode == "piano" and track.program not in PIANO_PROGRAMS:
                report.tracks_dropped.append(f"{label} (GM program {track.program + 1}, not piano)")
                continue
            if len(track.notes) == 0:
                continue
            report.tracks_used += 1
            if len(raw) + len(track.notes) > max_notes:
                raise MidiFileError(f"too many notes (more than {max_notes:,}); the limit keeps the studio responsive")
            track_notes = [Note(int(n.start), int(n.pitch), max(1, int(n.duration)), int(n.velocity)) for n in track.notes]
            far = next((n for n in track_notes if n.start < 0 or n.end > last_tick), None)
            if far is not None:
                raise MidiFileError(_far_note_message(far, ppq))
            if apply_sustain and len(track.pedals):
                pedals = [(int(p.start), min(int(p.end), last_tick)) for p in track.pedals]  # a far release
                track_notes, extended = _apply_sustain(track_notes, pedals)
                report.pedal_extended += extended
            raw.extend(track_notes)
        lo, hi = PIANO_PITCH_RANGE
        in_range = [n for n in raw if lo <= n.pitch <= hi and n.velocity > 0]
        report.out_of_range_removed = len(raw) - len(in_range)
        notes = dedupe_notes(in_range)
        report.duplicates_removed = len(in_range) - len(notes)

        tempos = []
        beyond = sum(1 for e in (*score.tempos, *score.time_signatures) if int(e.time) > last_tick)
        if beyond:  # a meta event after the longest clip cannot affect any note
            report.messages.append(f"ignored {beyond} tempo/meter events after the last possible bar")
        for t in score.tempos:
            if int(t.time) > last_tick:
                continue
            bpm = float(t.qpm)
            if not (MIN_BPM <= bpm <= MAX_BPM):
                raise MidiFileError(f"absurd tempo {bpm:.6g} bpm at tick {int(t.time)} (accepted: {MIN_BPM:g}–{MAX_BPM:g})")
            tempos.append(TempoChange(int(t.time), round(bpm, 3)))
        tempos = _dedupe_by_tick(tempos) or [TempoChange(0, DEFAULT_BPM)]
        sigs = []
        for ts in score.time_signatures:
            if int(ts.time) > last_tick:
                continue
            sig = TimeSignature(int(ts.time), int(ts.numerator), int(ts.denominator))
            if (problem := sig.problem(ppq)) is not None:
                report.messages.append(f"ignored {problem}")
                continue
            sigs.append(sig)
        sigs = _dedupe_by_tick(sigs) or [TimeSignature(0, 4, 4)]

        if mode == "user" and report.tracks_used > 1:
            report.messages.append(f"merged {report.tracks_used} tracks into one piano part")
        if report.tracks_dropped:
            report.messages.append("dropped tracks: " + ", ".join(report.tracks_dropped))
        if mode == "user" and any(t.program not in PIANO_PROGRAMS for t in score.tracks if not t.is_drum and len(t.notes)):
            report.messages.append("non-piano instruments imported as piano")
        if report.duplicates_removed:
            report.messages.append(f"removed {report.duplicates_removed} duplicated notes")
        if report.out_of_range_removed:
            report.messages.append(f"removed {report.out_of_range_removed} notes outside the piano range")
        if report.pedal_extended:
            report.messages.append(f"sustain pedal applied to {report.pedal_extended} notes")
        return cls(notes, ppq, tempos, sigs), report

    # ------------------------------------------------------------------ plain data (projects, JSON)
    def to_dict(self) -> dict:
        return {
            "ppq": self.ppq,
            "notes": [[n.start, n.pitch, n.duration, n.velocity] for n in self.notes],
            "tempos": [[t.tick, t.bpm] for t in self.tempos],
            "time_signatures": [[t.tick, t.numerator, t.denominator] for t in self.time_signatures],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Clip":
        """The inverse of `to_dict`, checked field by field: MidiFileError (one line) names the
        first problem — a value of the wrong type, or a note, tempo or meter outside the bounds."""
        if not isinstance(d, dict):
            raise MidiFileError("the clip is not an object")
        for key in ("ppq", "notes", "tempos", "time_signatures"):
            if key not in d:
                raise MidiFileError(f"the clip has no '{key}'")
        ppq = json_whole_number(d["ppq"], "ppq")
        if not 1 <= ppq <= MAX_PPQ:
            raise MidiFileError(f"invalid PPQ {ppq}: must be a whole number from 1 to {MAX_PPQ}")
        notes = _rows(d["notes"], "notes", 4, MAX_NOTES)
        tempos = _rows(d["tempos"], "tempos", 2, MAX_MAP_EVENTS)
        sigs = _rows(d["time_signatures"], "time_signatures", 3, MAX_MAP_EVENTS)
        return cls(
            check_notes([Note(*(json_whole_number(v, "note value") for v in row)) for row in notes], ppq),
            ppq,
            [TempoChange(json_whole_number(t, "tempo tick"), _json_real(b, "tempo")) for t, b in tempos],
            [TimeSignature(*(json_whole_number(v, "time signature value") for v in row)) for row in sigs],
        )


def max_clip_tick(ppq: int) -> int:
    """The last tick a clip at `ppq` may reach (MAX_CLIP_QUARTERS quarter notes, at most MAX_SMF_TICK)."""
    return min(MAX_CLIP_QUARTERS * ppq, MAX_SMF_TICK)


def _far_note_message(note: Note, ppq: int) -> str:
    return (f"note at tick {note.start} (length {note.duration}) lies outside the longest clip accepted "
            f"({MAX_CLIP_QUARTERS:,} quarter notes = tick {max_clip_tick(ppq):,} at PPQ {ppq})")


def check_notes(notes: list[Note], ppq: int) -> list[Note]:
    """`notes` if every one is a playable piano-roll note inside the longest clip, else
    MidiFileError naming the first that is not. Clips entering from outside (files, JSON)
    pass through here; the editor and the generator only make notes that do."""
    if len(notes) > MAX_NOTES:
        raise MidiFileError(f"too many notes ({len(notes):,}; the limit is {MAX_NOTES:,})")
    last_tick = max_clip_tick(ppq)
    for n in notes:
        if not (0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 and n.duration >= 1):
            raise MidiFileError(f"invalid note (start {n.start}, pitch {n.pitch}, length {n.duration}, "
                                f"velocity {n.velocity}): pitch 0–127, velocity 1–127, length ≥ 1")
        if n.start < 0 or n.end > last_tick:
            raise MidiFileError(_far_note_message(n, ppq))
    return notes


def _check_maps(ppq: int, tempos: list[TempoChange], sigs: list[TimeSignature]) -> None:
    """Tempo map and meters inside the musical bounds (a few entries: cheap on every Clip)."""
    if len(tempos) > MAX_MAP_EVENTS or len(sigs) > MAX_MAP_EVENTS:
        raise MidiFileError(f"more than {MAX_MAP_EVENTS:,} tempo changes or time signatures")
    last_tick = max_clip_tick(ppq)
    for t in tempos:
        if not (isinstance(t.bpm, numbers.Real) and math.isfinite(t.bpm) and MIN_BPM <= t.bpm <= MAX_BPM):
            raise MidiFileError(f"tempo {t.bpm} bpm at tick {t.tick} is outside {MIN_BPM:g}–{MAX_BPM:g} bpm")
        if not 0 <= t.tick <= last_tick:
            raise MidiFileError(f"tempo change at tick {t.tick} lies outside the clip (0–{last_tick:,})")
    for ts in sigs:
        if (problem := ts.problem(ppq)) is not None:
            raise MidiFileError(problem)
        if not 0 <= ts.tick <= last_tick:
            raise MidiFileError(f"time signature at tick {ts.tick} lies outside the clip (0–{last_tick:,})")


def json_whole_number(value, what: str) -> int:
    """A JSON value that is a whole number (1 and 1.0 both) of sane size, else MidiFileError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MidiFileError(f"{what} {_short(value)} is not a number")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise MidiFileError(f"{what} {_short(value)} is not a whole number")
    if abs(value) > 2**62:
        raise MidiFileError(f"{what} {_short(value)} is out of range")
    return int(value)


def _json_real(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MidiFileError(f"{what} {_short(value)} is not a number")
    if isinstance(value, int) and abs(value) > 2**62:
        raise MidiFileError(f"{what} {_short(value)} is out of range")
    return float(value)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _rows(value, what: str, width: int, limit: int) -> list:
    if not isinstance(value, list):
        raise MidiFileError(f"'{what}' is not a list")
    if len(value) > limit:
        raise MidiFileError(f"too many {what.replace('_', ' ')} ({len(value):,}; the limit is {limit:,})")
    for row in value:
        if not isinstance(row, list) or len(row) != width:
            raise MidiFileError(f"each of '{what}' must be a list of {width} numbers")
    return value


def dedupe_notes(notes: Iterable[Note]) -> list[Note]:
    """Drop duplicated notes (same pitch and onset), keeping the longest/loudest one."""
    best: dict[tuple[int, int], Note] = {}
    for n in notes:
        key = (n.start, n.pitch)
        old = best.get(key)
        if old is None or (n.duration, n.velocity) > (old.duration, old.velocity):
            best[key] = n
    return sorted(best.values())


def _apply_sustain(notes: list[Note], pedals: list[tuple[int, int]]) -> tuple[list[Note], int]:
    """Extend notes released while the sustain pedal is down to the pedal release.

    A later onset of the same pitch cuts the sustained note (a re-struck piano string).
    """
    if not pedals:
        return notes, 0
    pedals.sort()
    starts = [p[0] for p in pedals]
    by_pitch: dict[int, list[int]] = {}
    for i, n in enumerate(sorted(notes)):
        by_pitch.setdefault(n.pitch, []).append(n.start)
    out, extended = [], 0
    for n in notes:
        i = bisect.bisect_right(starts, n.end) - 1
        end = n.end
        if i >= 0 and pedals[i][0] <= n.end < pedals[i][1]:
            end = pedals[i][1]
            nxt = by_pitch[n.pitch]
            j = bisect.bisect_right(nxt, n.start)
            if j < len(nxt):
                end = min(end, nxt[j])
        if end > n.end:
            extended += 1
            out.append(replace(n, duration=end - n.start))
        else:
            out.append(n)
    return out, extended


def _dedupe_by_tick(events: list) -> list:
    out: dict[int, object] = {}
    for e in sorted(events, key=lambda e: e.tick):
        out[e.tick] = e  # the last event at a tick wins, as in a sequencer
    return list(out.values())


def _read_source(source: str | os.PathLike | bytes) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.exists():
            raise MidiFileError(f"no such file: {path}")
        if path.is_dir():
            raise MidiFileError(f"{path} is a folder, not a MIDI file")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise MidiFileError(f"{path.name} is {size / 1e6:.0f} MB; MIDI files over {MAX_FILE_BYTES // 2**20} MB are refused")
        with open(path, "rb") as f:  # at most the limit: a device (/dev/zero) reports size 0 and never ends
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise MidiFileError(f"{path.name} is over {MAX_FILE_BYTES // 2**20} MB (or never ends); not a MIDI file")
    if len(data) > MAX_FILE_BYTES:
        raise MidiFileError("MIDI data too large")
    return data


def _check_header(data: bytes) -> None:
    # Checked here because symusic's messages for these cases are cryptic (or it accepts them).
    if len(data) < 14 or data[:4] != b"MThd":
        raise MidiFileError("not a Standard MIDI File (no MThd header)")
    division = int.from_bytes(data[12:14], "big")
    if division == 0:
        raise MidiFileError("invalid MIDI header: 0 ticks per quarter note")
    if division & 0x8000:
        raise MidiFileError("SMPTE-timed MIDI files are not supported (need ticks per quarter note)")
    if data.find(b"MTrk", 14) < 0:
        raise MidiFileError("truncated MIDI file: no track chunk")


# A temp file older than this beside a file being saved was left by a crashed save.
STALE_TEMP_SECONDS = 60.0


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and an atomic rename.

    As an editor would: a symlink is written through (its target is replaced, the link stays),
    an existing file keeps its mode and a new one gets 0666 less the umask (not mkstemp's 0600),
    a file we may not write is refused (PermissionError), and temp files that a crashed earlier
    save left beside `path` are removed. Errors are OSErrors naming the path.
    """
    path = Path(os.path.realpath(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = None
    if path.exists():
        if not path.is_file():  # a device (/dev/full), a FIFO, a socket: never replaced by a file
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, "the file is read-only", str(path))
        mode = stat.S_IMODE(path.stat().st_mode)
    remove_stale_temps(path.parent, f".{glob.escape(path.name)}.*.tmp")
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:  # O_EXCL with mode 0666: the umask applies, as for any new file
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove_stale_temps(folder: Path, pattern: str, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete files matching `pattern` in `folder` not modified for `older_than` seconds (the
    leftovers of crashed atomic writes; a younger one may belong to a save in progress)."""
    removed = 0
    cutoff = time.time() - older_than
    for leftover in folder.glob(pattern):
        try:
            if leftover.is_file() and leftover.stat().st_mtime < cutoff:
                leftover.unlink()
                removed += 1
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
