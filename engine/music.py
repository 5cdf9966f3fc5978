"""The one note/clip model: notes in ticks with a PPQ, a tempo map and time signatures.

Everything in SMART Studio (editor, tokenizer, renderer, features, host, training) speaks
`Clip`. Standard MIDI Files are read and written through symusic; the piano handling of the
SMART paper (§3.1) lives here too, so training data and user files go through one path.
"""

from __future__ import annotations

import bisect
import os
import tempfile
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

    def ticks_per_bar(self, ppq: int) -> int:
        return self.numerator * ppq * 4 // self.denominator


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


@dataclass
class Clip:
    """A single-track piano clip: notes, tempo map, time signatures, in ticks at `ppq`."""

    notes: list[Note] = field(default_factory=list)
    ppq: int = DEFAULT_PPQ
    tempos: list[TempoChange] = field(default_factory=lambda: [TempoChange(0, DEFAULT_BPM)])
    time_signatures: list[TimeSignature] = field(default_factory=lambda: [TimeSignature(0, 4, 4)])

    def __post_init__(self) -> None:
        if self.ppq <= 0:
            raise MidiFileError(f"invalid PPQ {self.ppq}: must be positive")
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
    def seconds_at(self, tick: int | float) -> float:
        """Wall-clock seconds at `tick`, following the tempo map."""
        seconds, prev_tick, bpm = 0.0, 0, self.tempos[0].bpm
        for t in self.tempos[1:]:
            if t.tick >= tick:
                break
            seconds += (t.tick - prev_tick) * 60.0 / (bpm * self.ppq)
            prev_tick, bpm = t.tick, t.bpm
        return seconds + (tick - prev_tick) * 60.0 / (bpm * self.ppq)

    def tick_at(self, seconds: float) -> int:
        """Inverse of `seconds_at` (rounded down to a tick)."""
        elapsed, prev_tick, bpm = 0.0, 0, self.tempos[0].bpm
        for t in self.tempos[1:]:
            span = (t.tick - prev_tick) * 60.0 / (bpm * self.ppq)
            if elapsed + span > seconds:
                break
            elapsed += span
            prev_tick, bpm = t.tick, t.bpm
        return int(prev_tick + (seconds - elapsed) * bpm * self.ppq / 60.0)

    @property
    def duration_seconds(self) -> float:
        return self.seconds_at(self.end_tick)

    def bar_starts(self, until_tick: int | None = None) -> list[int]:
        """Tick of every bar line from 0 up to (and including the bar containing) `until_tick`."""
        until = self.end_tick if until_tick is None else until_tick
        starts: list[int] = []
        sigs = self.time_signatures
        tick = 0
        for i, ts in enumerate(sigs):
            tick = max(tick, ts.tick)
            stop = sigs[i + 1].tick if i + 1 < len(sigs) else None
            step = ts.ticks_per_bar(self.ppq)
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
        if ppq <= 0:
            raise MidiFileError(f"invalid PPQ {ppq} in the file header")
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
            track_notes = [Note(int(n.start), int(n.pitch), max(1, int(n.duration)), int(n.velocity)) for n in track.notes]
            if apply_sustain and len(track.pedals):
                track_notes, extended = _apply_sustain(track_notes, [(int(p.start), int(p.end)) for p in track.pedals])
                report.pedal_extended += extended
            raw.extend(track_notes)
            if len(raw) > max_notes:
                raise MidiFileError(f"too many notes (more than {max_notes:,}); the limit keeps the studio responsive")
        lo, hi = PIANO_PITCH_RANGE
        in_range = [n for n in raw if lo <= n.pitch <= hi and n.velocity > 0]
        report.out_of_range_removed = len(raw) - len(in_range)
        notes = dedupe_notes(in_range)
        report.duplicates_removed = len(in_range) - len(notes)

        tempos = []
        for t in score.tempos:
            bpm = float(t.qpm)
            if not (MIN_BPM <= bpm <= MAX_BPM):
                raise MidiFileError(f"absurd tempo {bpm:.6g} bpm at tick {int(t.time)} (accepted: {MIN_BPM:g}–{MAX_BPM:g})")
            tempos.append(TempoChange(int(t.time), round(bpm, 3)))
        tempos = _dedupe_by_tick(tempos) or [TempoChange(0, DEFAULT_BPM)]
        sigs = []
        for ts in score.time_signatures:
            num, den = int(ts.numerator), int(ts.denominator)
            if num <= 0 or den <= 0 or den & (den - 1):
                report.messages.append(f"ignored invalid time signature {num}/{den}")
                continue
            sigs.append(TimeSignature(int(ts.time), num, den))
        sigs = _dedupe_by_tick(sigs) or [TimeSignature(0, 4, 4)]

        if mode == "user" and report.tracks_used > 1:
            report.messages.append(f"merged {report.tracks_used} tracks into one piano part")
        if mode == "user" and any("not piano" not in d for d in report.tracks_dropped):
            pass
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
        try:
            return cls(
                [Note(int(s), int(p), int(du), int(v)) for s, p, du, v in d["notes"]],
                int(d["ppq"]),
                [TempoChange(int(t), float(b)) for t, b in d["tempos"]],
                [TimeSignature(int(t), int(n), int(de)) for t, n, de in d["time_signatures"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MidiFileError(f"malformed clip data ({exc})") from None


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
        data = path.read_bytes()
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
