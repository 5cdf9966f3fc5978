"""Reading files into the studio: projects and MIDI, told apart by suffix or by content."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.music import Clip, ImportReport, MidiFileError
from engine.project import PROJECT_SUFFIX, Project, ProjectError, load_project

MIDI_SUFFIXES = (".mid", ".midi", ".smf", ".kar")
PROJECT_FILTER = "SMART Studio projects (*.smartproj)"
MIDI_FILTER = "MIDI files (*.mid *.midi)"
OPEN_FILTER = f"Projects and MIDI files (*.smartproj *.mid *.midi);;{PROJECT_FILTER};;{MIDI_FILTER};;All files (*)"
WAV_FILTER = "WAV audio (*.wav)"
SOUNDFONT_FILTER = "SoundFonts (*.sf2 *.sf3);;All files (*)"


class OpenError(ValueError):
    """A file could not be opened; the message is one line for a dialog."""


@dataclass
class Opened:
    project: Project
    kind: str  # "project" or "midi"
    report: ImportReport | None = None


def _sniff(path: Path) -> str:
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise OpenError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if head.startswith(b"MThd"):
        return "midi"
    if head.lstrip()[:1] == b"{":
        return "project"
    raise OpenError(f"{path.name} is neither a SMART Studio project nor a MIDI file")


def read_any(path: str | Path) -> Opened:
    """Read a project or a MIDI file. Raises OpenError with a clear one-line message."""
    path = Path(path)
    if not path.exists():
        raise OpenError(f"no such file: {path}")
    if path.is_dir():
        raise OpenError(f"{path} is a folder")
    suffix = path.suffix.lower()
    kind = "project" if suffix == PROJECT_SUFFIX else "midi" if suffix in MIDI_SUFFIXES else _sniff(path)
    if kind == "project":
        try:
            return Opened(load_project(path), "project")
        except ProjectError as exc:
            raise OpenError(f"Cannot open {path.name}: {exc}") from None
    try:
        clip, report = Clip.from_midi(path, mode="user")
    except MidiFileError as exc:
        raise OpenError(f"Cannot import {path.name}: {exc}") from None
    return Opened(Project(clip=clip), "midi", report)
