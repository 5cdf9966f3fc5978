"""MIDI-in recording into the sketch at the playhead while the transport plays.

Events arrive on rtmidi's thread and are handed to the UI thread through a queued signal.
A note becomes a Note on its note-off; each take (one play..stop) is one undo step, built by
merging the per-note commands. Thru sends the notes to the synth (and MIDI out) at once.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal

from engine.music import Note
from studio.editor import operations as ops
from studio.editor.document import SketchDocument, new_gesture_key
from studio.transport.controller import Transport


class MidiRecorder(QObject):
    event_received = Signal(str, int, int)  # kind ("note_on"/"note_off"), pitch, velocity
    recorded = Signal(int)  # notes recorded so far in this take

    def __init__(self, document: SketchDocument, transport: Transport, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.doc, self.transport = document, transport
        self.record_enabled = True
        self.thru = True
        self.quantize_label: str | None = None  # a snap label from operations.SNAP_CHOICES, or None
        self._held: dict[int, tuple[float, int]] = {}  # pitch -> (start tick, velocity)
        self._take_key: int | None = None
        self._take_count = 0
        self.listeners: list = []  # called with each MidiNoteEvent on rtmidi's thread (e.g. the jam hears it)
        # Queued: the callback runs on rtmidi's thread; the slot runs on the UI thread.
        self.event_received.connect(self._on_event, Qt.QueuedConnection)
        transport.state_changed.connect(self._on_transport_state)

    def midi_callback(self, event) -> None:
        """For engine.midi_io.MidiIn: runs on rtmidi's thread, only forwards."""
        for listener in self.listeners:
            listener(event)
        self.event_received.emit(event.kind, int(event.pitch), int(event.velocity))

    def _on_transport_state(self) -> None:
        if not self.transport.playing:
            self._finish_held(self.transport.position)
            self._take_key = None

    def _on_event(self, kind: str, pitch: int, velocity: int) -> None:
        if self.thru:
            if kind == "note_on":
                self.transport.note_on(pitch, velocity)
            else:
                self.transport.note_off(pitch)
        if not (self.record_enabled and self.transport.playing):
            return
        tick = self.transport.position
        if kind == "note_on":
            if pitch in self._held:  # re-struck without a note-off: close the first one
                self._commit(pitch, tick)
            self._held[pitch] = (tick, velocity)
        elif pitch in self._held:
            self._commit(pitch, tick)

    def _finish_held(self, tick: float) -> None:
        for pitch in list(self._held):
            self._commit(pitch, tick)

    def _commit(self, pitch: int, end_tick: float) -> None:
        start, velocity = self._held.pop(pitch)
        loop = self.transport.loop if self.transport.loop_enabled else None
        if end_tick <= start:
            # The loop wrapped while the key was held: the note lasts to the loop end.
            end_tick = loop[1] if loop and loop[1] > start else start + self.doc.ppq / 8
        start_i = int(round(start))
        if self.quantize_label:
            start_i = max(0, ops.snap_tick(start_i, ops.snap_step(self.quantize_label, self.doc.ppq)))
        duration = max(1, int(round(end_tick - start)))
        note = Note(start_i, pitch, duration, max(1, min(127, velocity)))
        if self._take_key is None:
            self._take_key = new_gesture_key()
            self._take_count = 0
        notes, _added = ops.add_notes(self.doc.notes, [note])
        self._take_count += 1
        self.doc.push_notes("Record MIDI", notes, self.doc.selection, self._take_key)
        self.recorded.emit(self._take_count)
