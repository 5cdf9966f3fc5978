"""Where generated music goes in the sketch (no Qt).

A continuation is written for the span [continuation point, end of its last bar); the prompt is the music
before the point. What happens to music already after the point is the musician's choice:

- INSERT: the music from the point on moves later by the bars the continuation fills (nothing overlaps);
- REPLACE: notes starting inside the span give way to the continuation;
- EMPTY: the continuation goes only where nothing is written yet; a span holding music is refused.

An infill (regenerate selection) always replaces its span. The same function decides what Accept writes
and what "In context" plays, so what is heard is what is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.music import Clip, Note, TempoChange, TimeSignature, dedupe_notes

INSERT, REPLACE, EMPTY = "insert", "replace", "empty"
MODES = {
    INSERT: "Insert — move later music back",
    REPLACE: "Replace what is there",
    EMPTY: "Empty space only",
}
DEFAULT_MODE = INSERT


class PlacementConflict(ValueError):
    """EMPTY: the span already holds music."""


def bar_line_at_or_after(clip: Clip, tick: int) -> int:
    """`tick` itself when it is on a bar line, else the next bar line."""
    bar = clip.bar_index_at(tick)
    start = clip.bar_tick(bar)
    return start if start == tick else clip.bar_tick(bar + 1)


def continuation_span(clip: Clip, at: int, bars: int) -> tuple[int, int]:
    """The ticks a continuation of `bars` bars from `at` fills: to the next bar line, then `bars` bars."""
    first = bar_line_at_or_after(clip, at)
    return at, clip.bar_tick(clip.bar_index_at(first) + bars)


def notes_in(notes: list[Note], span: tuple[int, int]) -> list[Note]:
    """Notes that start inside [a, b)."""
    a, b = span
    return [n for n in notes if a <= n.start < b]


def prompt_notes(clip: Clip, at: int) -> list[Note]:
    """The music the model hears for a continuation from `at`: the notes that start before it."""
    return [n for n in clip.notes if n.start < at]


@dataclass
class Placement:
    clip: Clip  # the sketch with the candidate in it
    added: list[Note] = field(default_factory=list)  # the candidate's notes as they are in `clip`
    shifted: int = 0  # notes moved later (INSERT)
    replaced: int = 0  # notes removed (REPLACE, infill)
    room: int = 0  # ticks inserted (INSERT)


def _extent_end(clip: Clip, span: tuple[int, int], notes: list[Note]) -> int:
    """The span's end, or the bar line after the candidate's last onset when it wrote past it."""
    last = max((n.start for n in notes), default=span[0])
    return max(span[1], clip.bar_tick(clip.bar_index_at(last) + 1))


def place(clip: Clip, notes: list[Note], span: tuple[int, int], mode: str) -> Placement:
    """The sketch with `notes` (written for `span`) placed by `mode`. Raises PlacementConflict (EMPTY)."""
    notes = dedupe_notes(notes)
    a = span[0]
    if mode == REPLACE:
        b = _extent_end(clip, span, notes) if notes else span[1]
        kept = [n for n in clip.notes if not a <= n.start < b]
        return Placement(clip.with_notes(dedupe_notes(kept + notes)), notes, replaced=len(clip.notes) - len(kept))
    if mode == EMPTY:
        b = _extent_end(clip, span, notes) if notes else span[1]
        taken = notes_in(clip.notes, (a, b))
        if taken:
            first, last = clip.bar_index_at(taken[0].start) + 1, clip.bar_index_at(taken[-1].start) + 1
            where = f"bar {first}" if first == last else f"bars {first}–{last}"
            raise PlacementConflict(f"{where} already hold{'s' if first == last else ''} music: "
                                    f"choose Insert or Replace to use this candidate there")
        return Placement(clip.with_notes(dedupe_notes(list(clip.notes) + notes)), notes)
    if mode != INSERT:
        raise ValueError(f"unknown placement {mode!r}")
    later = [n for n in clip.notes if n.start >= a]
    if not later:  # nothing after the point: nothing to move
        return Placement(clip.with_notes(dedupe_notes(list(clip.notes) + notes)), notes)
    # Whole bars, from the bar holding the point: the later music keeps its place in the bar.
    room = _extent_end(clip, span, notes) - clip.bar_tick(clip.bar_index_at(a))
    moved = [Note(n.start + room, n.pitch, n.duration, n.velocity) for n in later]
    before = [n for n in clip.notes if n.start < a]
    tempos = [t if t.tick < a or t.tick == 0 else TempoChange(t.tick + room, t.bpm) for t in clip.tempos]
    sigs = [s if s.tick < a or s.tick == 0 else TimeSignature(s.tick + room, s.numerator, s.denominator)
            for s in clip.time_signatures]
    out = Clip(dedupe_notes(before + notes + moved), clip.ppq, tempos, sigs)
    return Placement(out, notes, shifted=len(later), room=room)


def place_infill(clip: Clip, notes: list[Note], span: tuple[int, int]) -> Placement:
    """Regenerated bars: the candidate replaces the notes that start in its span."""
    a, b = span
    kept = [n for n in clip.notes if not a <= n.start < b]
    notes = dedupe_notes(notes)
    return Placement(clip.with_notes(dedupe_notes(kept + notes)), notes, replaced=len(clip.notes) - len(kept))


def place_candidate(clip: Clip, candidate) -> Placement:
    """Where Accept (and "In context") puts a candidate (`history.Candidate`): an infill replaces its bars;
    a continuation goes by its placement. Candidates saved before placements existed merge as they did."""
    if candidate.mode == "infill" and candidate.span is not None:
        return place_infill(clip, candidate.notes, candidate.span)
    if candidate.span is None or candidate.placement is None:
        notes = dedupe_notes(candidate.notes)
        return Placement(clip.with_notes(dedupe_notes(list(clip.notes) + notes)), notes)
    return place(clip, candidate.notes, candidate.span, candidate.placement)
