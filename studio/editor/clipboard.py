"""Notes on the clipboard and in drags: a Standard MIDI File (`audio/midi`) for other apps,
plus an internal JSON format that keeps exact ticks and PPQ for pasting inside the studio."""

from __future__ import annotations

import atexit
import json
import tempfile
from pathlib import Path

import shiboken6
from PySide6.QtCore import QMimeData, QUrl
from PySide6.QtGui import QGuiApplication

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


_release_registered = False


def put_on_clipboard(mime: QMimeData) -> None:
    """Hand `mime` to the system clipboard (which owns it from then on).

    A QMimeData made from Python is a Python-aware subclass; if the clipboard still holds one when
    the process exits, Qt destroys it in a C++ exit handler after Python has shut down, and the
    process dies with a segfault on exit. So it is released while Python is still alive (atexit),
    keeping its plain text if it has any.
    """
    global _release_registered
    QGuiApplication.clipboard().setMimeData(mime)
    if not _release_registered:
        atexit.register(release_clipboard)
        _release_registered = True


def release_clipboard() -> None:
    """Drop clipboard data created from Python (see put_on_clipboard); keeps its text. Idempotent."""
    if QGuiApplication.instance() is None:
        return
    clipboard = QGuiApplication.clipboard()
    data = clipboard.mimeData()
    if data is None or not shiboken6.isValid(data) or not shiboken6.createdByPython(data):
        return
    text = data.text() if data.hasText() else ""
    clipboard.clear()  # deletes the data now, while Python runs
    if text:
        clipboard.setText(text)  # a plain C++ QMimeData: safe to outlive Python


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


def bar_aligned_clip(notes: list[Note], source: Clip) -> Clip:
    """The notes from the bar line at or before the first of them, with the tempo map and metre in force
    from there: dropped at a bar line in a DAW, a phrase that starts on beat 2¼ still starts on beat 2¼
    (the leading rest is part of the file)."""
    first_bar = source.bar_index_at(min(n.start for n in notes))
    after_last = source.bar_index_at(max(n.end for n in notes)) + 1
    return source.with_notes(list(notes)).slice_bars(first_bar, after_last + 1)


def drag_mime(notes: list[Note], source: Clip, name: str = "sketch") -> QMimeData:
    """Mime data for dragging notes out: a temp .mid file URL and its plain path (for file managers/DAWs) and
    MIDI bytes that keep the notes' place on the bar grid (`bar_aligned_clip`), plus the studio's own notes
    format."""
    global _drag_dir
    if _drag_dir is None:
        # Lives until the process exits: the drop target may read the file after the drag returns.
        _drag_dir = tempfile.TemporaryDirectory(prefix="smart-studio-drag-")
    mime = notes_to_mime(notes, source)
    safe = "".join(c for c in name if c.isalnum() or c in "-_ ") or "sketch"
    path = Path(_drag_dir.name) / f"{safe}.mid"
    aligned = bar_aligned_clip(notes, source)
    aligned.save_midi(path)
    midi = aligned.to_midi_bytes()
    mime.setData(MIME_MIDI, midi)
    mime.setData(MIME_MIDI_ALT, midi)
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    mime.setText(str(path))  # the plain path, for drop targets that read text only
    return mime
