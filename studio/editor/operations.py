"""Pure note edits used by the editor tools and undo commands (no Qt: easy to test).

Every function takes the clip's notes (and the selected notes) and returns the new note list
and the new selection. Notes are values (frozen dataclasses), so a selection is a set of notes.
Two notes with the same onset and pitch cannot coexist (MIDI cannot tell them apart): the
results go through `engine.music.dedupe_notes`, which keeps the longer one.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import replace

from engine.music import Note, dedupe_notes

MIN_PITCH, MAX_PITCH = 0, 127

# Snap divisions: label -> length in quarter notes (None = off).
SNAP_CHOICES: list[tuple[str, float | None]] = [
    ("1/4", 1.0),
    ("1/8", 0.5),
    ("1/16", 0.25),
    ("1/32", 0.125),
    ("1/4T", 2.0 / 3.0),
    ("1/8T", 1.0 / 3.0),
    ("1/16T", 1.0 / 6.0),
    ("1/32T", 1.0 / 12.0),
    ("Off", None),
]
SNAP_QUARTERS = dict(SNAP_CHOICES)


class EditRefused(ValueError):
    """An edit that would push notes out of range; the editor shows the message and does nothing."""


def snap_step(label: str, ppq: int) -> float:
    """Grid step in ticks for a snap label (1 tick when snapping is off)."""
    quarters = SNAP_QUARTERS[label]
    return 1.0 if quarters is None else quarters * ppq


def snap_tick(tick: float, step: float, *, mode: str = "round") -> int:
    if step <= 1.0:
        return int(round(tick))
    k = tick / step
    if mode == "floor":
        k = math.floor(k + 1e-9)
    else:
        k = round(k)
    return int(round(k * step))


# A note as a plain tuple: hashing/comparing these is far cheaper than the dataclass
# methods, which matters when a sketch has thousands of notes and edits run per mouse move.
note_key = operator.attrgetter("start", "pitch", "duration", "velocity")


def _merge(notes: list[Note], removed: set[Note], added: list[Note]) -> list[Note]:
    """`notes` without `removed`, plus `added`, deduplicated."""
    if removed:
        drop = set(map(note_key, removed))
        kept = [n for n, k in zip(notes, map(note_key, notes)) if k not in drop]
    else:
        kept = list(notes)
    return dedupe_notes(kept + added)


def _surviving(added: list[Note], result: list[Note]) -> frozenset[Note]:
    """The added notes still present after deduplication."""
    if not added:
        return frozenset()
    present = set(map(note_key, result))
    return frozenset(n for n in added if note_key(n) in present)


def add_notes(notes: list[Note], new: Iterable[Note]) -> tuple[list[Note], frozenset[Note]]:
    new = list(new)
    for n in new:
        _check(n)
    result = _merge(notes, set(), new)
    return result, _surviving(new, result)


def delete_notes(notes: list[Note], selection: Iterable[Note]) -> tuple[list[Note], frozenset[Note]]:
    gone = set(selection)
    return [n for n in notes if n not in gone], frozenset()


def move_notes(
    notes: list[Note], selection: Iterable[Note], delta_ticks: int, delta_pitch: int
) -> tuple[list[Note], frozenset[Note]]:
    sel = set(selection)
    if not sel:
        return list(notes), frozenset()
    min_start = min(n.start for n in sel)
    lo, hi = min(n.pitch for n in sel), max(n.pitch for n in sel)
    if min_start + delta_ticks < 0:
        raise EditRefused("cannot move notes before the start of the sketch")
    if lo + delta_pitch < MIN_PITCH or hi + delta_pitch > MAX_PITCH:
        raise EditRefused("cannot move notes outside the MIDI pitch range 0–127")
    moved = [replace(n, start=n.start + delta_ticks, pitch=n.pitch + delta_pitch) for n in sel]
    result = _merge(notes, sel, moved)
    return result, _surviving(moved, result)


def resize_notes(
    notes: list[Note], selection: Iterable[Note], delta_ticks: int, *, min_duration: int = 1
) -> tuple[list[Note], frozenset[Note]]:
    sel = set(selection)
    resized = [replace(n, duration=max(min_duration, n.duration + delta_ticks)) for n in sel]
    result = _merge(notes, sel, resized)
    return result, _surviving(resized, result)


def add_velocity(notes: list[Note], targets: Iterable[Note], delta: int) -> tuple[list[Note], frozenset[Note]]:
    tg = set(targets)
    changed = [replace(n, velocity=max(1, min(127, n.velocity + delta))) for n in tg]
    result = _merge(notes, tg, changed)
    return result, _surviving(changed, result)


def quantize_notes(notes: list[Note], selection: Iterable[Note], step: float) -> tuple[list[Note], frozenset[Note]]:
    sel = set(selection)
    moved = [replace(n, start=max(0, snap_tick(n.start, step))) for n in sel]
    result = _merge(notes, sel, moved)
    return result, _surviving(moved, result)


def normalized(notes: Iterable[Note]) -> list[Note]:
    """Notes shifted so the first starts at tick 0 (clipboard / drag-out form)."""
    notes = sorted(notes)
    if not notes:
        return []
    first = notes[0].start
    return [replace(n, start=n.start - first) for n in notes]


def paste_notes(notes: list[Note], clip_notes: Iterable[Note], at_tick: int) -> tuple[list[Note], frozenset[Note]]:
    placed = [replace(n, start=n.start + at_tick) for n in normalized(clip_notes)]
    for n in placed:
        _check(n)
    result = _merge(notes, set(), placed)
    return result, _surviving(placed, result)


def duplicate_notes(notes: list[Note], selection: Iterable[Note], step: float) -> tuple[list[Note], frozenset[Note]]:
    """Copies of the selection placed right after it (its span rounded up to the grid)."""
    sel = sorted(selection)
    if not sel:
        return list(notes), frozenset()
    first = sel[0].start
    span = max(n.end for n in sel) - first
    if step > 1:
        span = int(round(math.ceil(span / step - 1e-9) * step))
    copies = [replace(n, start=n.start + span) for n in sel]
    result = _merge(notes, set(), copies)
    return result, _surviving(copies, result)


def _check(n: Note) -> None:
    if not (MIN_PITCH <= n.pitch <= MAX_PITCH):
        raise EditRefused(f"pitch {n.pitch} is outside the MIDI range 0–127")
    if n.start < 0 or n.duration < 1:
        raise EditRefused("notes need a start ≥ 0 and a length ≥ 1 tick")
    if not (1 <= n.velocity <= 127):
        raise EditRefused(f"velocity {n.velocity} is outside 1–127")
