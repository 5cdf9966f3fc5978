"""Training prompts picked from the sketch (no Qt): a selection or a loop region becomes a prompt clip."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from engine.meter import model_meter
from engine.music import Clip, Note


@dataclass
class PromptClip:
    """One prompt: notes cut from the sketch at the model's bar lines (engine.meter), shifted to start at
    bar 0 (the meter and tempo at that bar are kept)."""

    name: str
    clip: Clip
    source: dict = field(default_factory=dict)  # where it came from: {"kind": "selection", "bars": [a, b]}

    @property
    def bars(self) -> int:
        return bar_count(self.clip)

    @property
    def notes(self) -> int:
        return len(self.clip.notes)

    def describe(self) -> str:
        return f"{self.name} — {self.bars} bar{'s' if self.bars != 1 else ''}, {self.notes} notes"

    def midi(self) -> bytes:
        return self.clip.to_midi_bytes()


def bar_count(clip: Clip) -> int:
    if not clip.notes:
        return 0
    last = max(n.start + n.duration for n in clip.notes) - 1
    return clip.bar_index_at(max(0, last)) + 1


def prompt_from_notes(sketch: Clip, notes: Iterable[Note], name: str, kind: str = "selection") -> PromptClip | None:
    """The bars spanned by `notes` (whole bars of the model's meter: the model continues from a bar line)."""
    notes = sorted(notes)
    if not notes:
        return None
    sketch = model_meter(sketch)[0]
    first_bar = sketch.bar_index_at(notes[0].start)
    last_tick = max(n.start + n.duration for n in notes) - 1
    last_bar = sketch.bar_index_at(max(notes[0].start, last_tick))
    start, end = sketch.bar_tick(first_bar), sketch.bar_tick(last_bar + 1)
    picked = set(notes)
    region = sketch.with_notes([n for n in sketch.notes if n in picked])
    clip = region.slice_ticks(start, end)  # shifted to 0 with the meter/tempo in force there
    if not clip.notes:
        return None
    return PromptClip(name, clip, {"kind": kind, "bars": [first_bar, last_bar + 1]})


def prompt_from_region(sketch: Clip, start_tick: int, end_tick: int, name: str) -> PromptClip | None:
    """The sketch's notes starting in [start_tick, end_tick) (e.g. the loop region), at bar lines."""
    notes = [n for n in sketch.notes if start_tick <= n.start < end_tick]
    return prompt_from_notes(sketch, notes, name, kind="region")
