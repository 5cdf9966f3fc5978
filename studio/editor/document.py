"""The sketch being edited: one Clip, the selection, and the QUndoStack every edit goes through.

Every change to the clip is a `ClipEditCommand` that stores the clip before and after (notes
are immutable values, so this is a list copy, not a deep copy) plus the selection on both
sides. Continuous gestures (dragging notes, wheel/lane velocity edits, MIDI recording) push
one command per step with the same `merge_key`; consecutive commands with the same key merge
into one undo step, each step computed from the gesture's starting clip.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoCommand, QUndoStack

from engine.music import Clip, Note, TempoChange, TimeSignature
from studio.editor.operations import note_key

_MERGE_ID = 0x5A17
_gesture_ids = itertools.count(1)


def new_gesture_key() -> int:
    """A fresh key for one continuous gesture (a drag, a wheel burst, a recording take)."""
    return next(_gesture_ids)


class ClipEditCommand(QUndoCommand):
    def __init__(
        self,
        document: SketchDocument,
        text: str,
        before: Clip,
        after: Clip,
        selection_before: frozenset[Note],
        selection_after: frozenset[Note],
        merge_key: int | None = None,
    ) -> None:
        super().__init__(text)
        self._doc = document
        self.before, self.after = before, after
        self.selection_before, self.selection_after = selection_before, selection_after
        self.merge_key = merge_key

    def id(self) -> int:  # noqa: A003 - Qt API
        return _MERGE_ID if self.merge_key is not None else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, ClipEditCommand) or other.merge_key != self.merge_key:
            return False
        self.after, self.selection_after = other.after, other.selection_after
        # A gesture that ends where it began (dragged back) leaves no undo step behind.
        self.setObsolete(self.after == self.before)
        return True

    def redo(self) -> None:
        self._doc._apply(self.after, self.selection_after)

    def undo(self) -> None:
        self._doc._apply(self.before, self.selection_before)


class SketchDocument(QObject):
    """Owns the clip, the selection and the undo stack. Views listen to the signals."""

    clip_changed = Signal()
    selection_changed = Signal()

    def __init__(self, clip: Clip | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self.undo_stack.setUndoLimit(1000)
        self._clip = clip if clip is not None else Clip()
        self._selection: frozenset[Note] = frozenset()

    # ------------------------------------------------------------------ reading
    @property
    def clip(self) -> Clip:
        return self._clip

    @property
    def notes(self) -> list[Note]:
        return self._clip.notes

    @property
    def ppq(self) -> int:
        return self._clip.ppq

    @property
    def selection(self) -> frozenset[Note]:
        return self._selection

    def selected_notes(self) -> list[Note]:
        return sorted(self._selection)

    # ------------------------------------------------------------------ selection (not undoable)
    def set_selection(self, notes: Iterable[Note]) -> None:
        sel = self._present(notes)
        if sel != self._selection:
            self._selection = sel
            self.selection_changed.emit()

    def select_all(self) -> None:
        self.set_selection(self._clip.notes)

    def clear_selection(self) -> None:
        self.set_selection(())

    # ------------------------------------------------------------------ whole-document changes
    def load(self, clip: Clip) -> None:
        """Replace the sketch (open/new/import): not undoable, clears the undo history."""
        self.undo_stack.clear()
        self._clip = clip
        self._selection = frozenset()
        self.clip_changed.emit()
        self.selection_changed.emit()
        self.undo_stack.setClean()

    # ------------------------------------------------------------------ undoable edits
    def push_clip(
        self,
        text: str,
        after: Clip,
        selection: Iterable[Note] | None = None,
        merge_key: int | None = None,
        before: Clip | None = None,
    ) -> None:
        """Push an undoable change to `after`. `before` defaults to the current clip."""
        sel_after = frozenset(selection) if selection is not None else self._selection
        self.undo_stack.push(
            ClipEditCommand(
                self,
                text,
                before if before is not None else self._clip,
                after,
                self._selection,
                sel_after,
                merge_key,
            )
        )

    def push_notes(
        self,
        text: str,
        notes: list[Note],
        selection: Iterable[Note] | None = None,
        merge_key: int | None = None,
    ) -> None:
        self.push_clip(text, self._clip.with_notes(notes), selection, merge_key)

    def set_tempo(self, bpm: float) -> None:
        """Change the sketch tempo (the opening tempo; later tempo changes are kept)."""
        bpm = round(float(bpm), 3)
        if abs(bpm - self._clip.bpm) < 1e-6:
            return
        tempos = [TempoChange(0, bpm)] + [t for t in self._clip.tempos if t.tick > 0]
        after = Clip(list(self._clip.notes), self._clip.ppq, tempos, list(self._clip.time_signatures))
        self.push_clip(f"Tempo {bpm:g} BPM", after)

    def set_time_signature(self, numerator: int, denominator: int) -> None:
        ts0 = self._clip.time_signatures[0]
        if (ts0.numerator, ts0.denominator) == (numerator, denominator):
            return
        sigs = [TimeSignature(0, numerator, denominator)] + [t for t in self._clip.time_signatures if t.tick > 0]
        after = Clip(list(self._clip.notes), self._clip.ppq, list(self._clip.tempos), sigs)
        self.push_clip(f"Time signature {numerator}/{denominator}", after)

    # ------------------------------------------------------------------ used by commands only
    def _present(self, notes: Iterable[Note]) -> frozenset[Note]:
        """The given notes that exist in the clip."""
        notes = list(notes)
        if not notes:
            return frozenset()
        present = set(map(note_key, self._clip.notes))
        return frozenset(n for n in notes if note_key(n) in present)

    def _apply(self, clip: Clip, selection: frozenset[Note]) -> None:
        self._clip = clip
        self._selection = self._present(selection)
        self.clip_changed.emit()
        self.selection_changed.emit()
