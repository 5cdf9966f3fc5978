"""Audition candidates through the transport's Player: solo, in context (sketch + candidate), and A/B
(switch between two candidates while playing, keeping the position). The sketch itself is never
edited; the player's clip goes back to the sketch when the audition stops."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from engine.music import Clip, dedupe_notes
from studio.generate.placement import PlacementConflict, place_candidate

SOLO, CONTEXT = "solo", "context"


def audition_clip(sketch: Clip, candidate, mode: str) -> Clip:
    """What is heard: the candidate alone, or in the sketch where Accept would put it."""
    if mode == SOLO:
        return sketch.with_notes(candidate.notes)
    try:
        return place_candidate(sketch, candidate).clip
    except PlacementConflict:  # cannot be accepted there; still let the musician hear it over the sketch
        return sketch.with_notes(dedupe_notes(list(sketch.notes) + list(candidate.notes)))


class Audition(QObject):
    changed = Signal()

    def __init__(self, transport, document, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.transport, self.doc = transport, document
        self.clip: Clip | None = None  # what the audition plays (None: not auditioning)
        self.mode: str | None = None
        self.item = None  # the candidate being heard
        self._restoring = False
        transport.state_changed.connect(self._on_transport_state)
        document.clip_changed.connect(self._on_clip_changed)

    @property
    def active(self) -> bool:
        return self.clip is not None

    def play(self, item, mode: str, *, restart: bool = True) -> None:
        """Hear `item` (a history.Candidate, or anything with `notes`). restart=False keeps the playhead (A/B)."""
        notes = item.notes
        if not notes:
            return
        clip = audition_clip(self.doc.clip, item, mode) if hasattr(item, "mode") else self.doc.clip.with_notes(notes)
        self.clip, self.mode, self.item = clip, mode, item
        player = self.transport.player
        if player is not None:
            player.set_clip(clip)
        if restart or not self.transport.playing:
            first = min(n.start for n in notes)
            if mode == CONTEXT:
                bar = self.doc.clip.bar_index_at(first)
                start = self.doc.clip.bar_tick(max(0, bar - 1))  # a bar of lead-in
            else:
                start = first
            self.transport.play(start)
        self.changed.emit()

    def stop(self) -> None:
        if self.clip is None:
            return
        self._restoring = True
        try:
            if self.transport.playing:
                self.transport.stop()
        finally:
            self._restoring = False
        self._end()

    def _end(self) -> None:
        self.clip = self.mode = self.item = None
        player = self.transport.player
        if player is not None:
            player.set_clip(self.doc.clip)
        self.changed.emit()

    def _on_transport_state(self) -> None:
        if self.clip is not None and not self._restoring and not self.transport.playing:
            self._end()  # stopped from the transport (Space) or it reached the end

    def _on_clip_changed(self) -> None:
        if self.clip is not None:  # an edit: the transport already plays the sketch again
            self.clip = self.mode = self.item = None
            self.changed.emit()
