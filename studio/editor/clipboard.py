"""Notes on the clipboard and in drags: a Standard MIDI File (`audio/midi`) for other apps,
plus an internal JSON format that keeps exact ticks and PPQ for pasting inside the studio."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from PySide6.QtCore import QMimeData, QUrl

from engine.music import Clip, MidiFileError, Note, TempoChange
from studio.editor.operations import normalized

MIME_MIDI = "audio/midi"
MIME_MIDI_ALT = "audio/x-midi"
MIME_NOTES = "application/x-smart-studio-notes"


def notes_clip(notes: list[Note], source: Clip) -> Clip:
    """The notes (moved to start at tick 0) with the source clip's PPQ, tempo and metre."""
    return Clip(normalized(notes), source.ppq, [TempoChange(0, source.bpm)], [source.time_signature])


def notes_to_mime(notes: list[Note], source: Clip) -> QMimeData:
    clip = notes_clip(notes, source)
    mime = QMimeData()
    midi = clip.to_midi_bytes()
    mime.setData(MIME_MIDI, midi)
    mime.setData(MIME_MIDI_ALT, midi)
    payload = {"ppq": clip.ppq, "notes": [[n.start, n.pitch, n.duration, n.velocity] for n in clip.notes]}
    mime.setData(MIME_NOTES, json.dumps(payload).encode())
    return mime


def notes_from_mime(mime: QMimeData, ppq: int) -> list[Note] | None:
    """Notes (starting at 0, at `ppq`) from clipboard data, or None if there are none.

    Raises MidiFileError when the data claims to be notes/MIDI but cannot be read.
    """
    if mime.hasFormat(MIME_NOTES):
        try:
            payload = json.loads(bytes(mime.data(MIME_NOTES)).decode())
            clip = Clip([Note(*map(int, n)) for n in payload["notes"]], int(payload["ppq"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise MidiFileError(f"clipboard notes are damaged ({exc})") from None
        return normalized(clip.resampled(ppq).notes)
    for fmt in (MIME_MIDI, MIME_MIDI_ALT):
        if mime.hasFormat(fmt):
            clip, _ = Clip.from_midi(bytes(mime.data(fmt)), mode="user")
            return normalized(clip.resampled(ppq).notes)
    if mime.hasUrls():
        for url in mime.urls():
            if url.isLocalFile() and url.toLocalFile().lower().endswith((".mid", ".midi")):
                clip, _ = Clip.from_midi(url.toLocalFile(), mode="user")
                return normalized(clip.resampled(ppq).notes)
    return None


_drag_dir: tempfile.TemporaryDirectory | None = None


def drag_mime(notes: list[Note], source: Clip, name: str = "sketch") -> QMimeData:
    """Mime data for dragging notes out: a temp .mid file URL (for file managers/DAWs) + MIDI bytes."""
    global _drag_dir
    if _drag_dir is None:
        # Lives until the process exits: the drop target may read the file after the drag returns.
        _drag_dir = tempfile.TemporaryDirectory(prefix="smart-studio-drag-")
    mime = notes_to_mime(notes, source)
    safe = "".join(c for c in name if c.isalnum() or c in "-_ ") or "sketch"
    path = Path(_drag_dir.name) / f"{safe}.mid"
    notes_clip(notes, source).save_midi(path)
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    return mime
