"""The SMART Studio project file (`.smartproj`): plain JSON, versioned, saved atomically.

A project is the sketch clip plus the studio state worth keeping with it: the loop region,
the SoundFont, and two lists reserved for the generator (`candidates`, `history`) that this
module carries through untouched. No Qt here: the CLI and tests use it too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import first_line
from engine.music import Clip, MidiFileError, atomic_write_text, json_whole_number, max_clip_tick

PROJECT_SUFFIX = ".smartproj"
PROJECT_FORMAT = "smart-studio-project"
PROJECT_VERSION = 1
# A project is a sketch plus candidates; anything far bigger is not one of ours (or is damaged).
MAX_PROJECT_BYTES = 64 * 1024 * 1024
MAX_PATH_CHARS = 4096


class ProjectError(ValueError):
    """A project file could not be read or written; the message is one clear line."""


@dataclass
class LoopRegion:
    start: int
    end: int
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ProjectError(f"invalid loop region {self.start}–{self.end} (need 0 ≤ start < end)")

    @classmethod
    def from_dict(cls, data: Any, ppq: int) -> LoopRegion:
        """A loop region from project JSON, inside the longest clip at `ppq`."""
        if not isinstance(data, dict) or "start" not in data or "end" not in data:
            raise ProjectError("damaged project: the loop region needs 'start' and 'end'")
        try:
            start = json_whole_number(data["start"], "loop start")
            end = json_whole_number(data["end"], "loop end")
        except MidiFileError as exc:
            raise ProjectError(f"damaged project: {exc}") from None
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ProjectError("damaged project: the loop's 'enabled' must be true or false")
        if end > max_clip_tick(ppq):
            raise ProjectError(f"damaged project: loop end {end:,} lies beyond the longest clip "
                               f"(tick {max_clip_tick(ppq):,} at PPQ {ppq})")
        return cls(start, end, enabled)


@dataclass
class Project:
    clip: Clip = field(default_factory=Clip)
    loop: LoopRegion | None = None
    soundfont: str | None = None  # None = the shipped piano
    # Reserved for the generator panels: kept verbatim through load/save.
    candidates: list[Any] = field(default_factory=list)
    history: list[Any] = field(default_factory=list)
    # How the studio last showed the sketch (zoom, scroll); its own keys, checked where it applies them.
    view: dict[str, Any] | None = None

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict:
        return {
            "format": PROJECT_FORMAT,
            "version": PROJECT_VERSION,
            "clip": self.clip.to_dict(),
            "loop": None
            if self.loop is None
            else {"start": self.loop.start, "end": self.loop.end, "enabled": self.loop.enabled},
            "soundfont": self.soundfont,
            "candidates": self.candidates,
            "history": self.history,
            "view": self.view,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any) -> Project:
        if not isinstance(data, dict):
            raise ProjectError("not a SMART Studio project (top level is not a JSON object)")
        if data.get("format") != PROJECT_FORMAT:
            raise ProjectError("not a SMART Studio project (missing or wrong 'format' field)")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ProjectError("damaged project: 'version' is missing or not a number")
        if version > PROJECT_VERSION:
            raise ProjectError(
                f"project format version {version} is newer than this studio understands "
                f"({PROJECT_VERSION}); update SMART Studio to open it"
            )
        if version < 1:
            raise ProjectError(f"unknown project format version {version}")
        clip_data = data.get("clip")
        if not isinstance(clip_data, dict):
            raise ProjectError("damaged project: no clip")
        try:  # every field inside its musical bounds: music.Clip.from_dict
            clip = Clip.from_dict(clip_data)
        except MidiFileError as exc:
            raise ProjectError(f"damaged project: {exc}") from None
        loop_data = data.get("loop")
        loop = None if loop_data is None else LoopRegion.from_dict(loop_data, clip.ppq)
        soundfont = data.get("soundfont")
        if soundfont is not None and not (isinstance(soundfont, str) and 0 < len(soundfont) <= MAX_PATH_CHARS
                                          and "\x00" not in soundfont):
            raise ProjectError("damaged project: 'soundfont' must be a path or null")
        candidates = data.get("candidates", [])
        history = data.get("history", [])
        if not isinstance(candidates, list) or not isinstance(history, list):
            raise ProjectError("damaged project: 'candidates' and 'history' must be lists")
        view = data.get("view")
        if view is not None and not (isinstance(view, dict) and len(view) <= 32):
            raise ProjectError("damaged project: 'view' must be an object or null")
        return cls(clip, loop, soundfont, candidates, history, view)

    @classmethod
    def from_json(cls, text: str) -> Project:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProjectError(f"not a SMART Studio project or truncated (invalid JSON at line {exc.lineno})") from None
        except RecursionError:
            raise ProjectError("not a SMART Studio project (JSON nested too deeply)") from None
        except ValueError as exc:  # e.g. an integer literal of thousands of digits
            raise ProjectError(f"not a SMART Studio project ({first_line(exc)})") from None
        return cls.from_dict(data)


def load_project(path: str | os.PathLike) -> Project:
    """Read a `.smartproj` file. Raises ProjectError (one line) for anything wrong."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ProjectError(f"{path} is a folder, not a project")
        if size > MAX_PROJECT_BYTES:
            raise ProjectError(f"{path.name} is {size / 1e6:.0f} MB; not a SMART Studio project")
        with open(path, "rb") as f:  # at most the limit: a device (/dev/zero) reports size 0 and never ends
            raw = f.read(MAX_PROJECT_BYTES + 1)
        if len(raw) > MAX_PROJECT_BYTES:
            raise ProjectError(f"{path.name} is over {MAX_PROJECT_BYTES // 2**20} MB (or never ends); "
                               "not a SMART Studio project")
    except FileNotFoundError:
        raise ProjectError(f"no such file: {path}") from None
    except OSError as exc:
        raise ProjectError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProjectError(f"{path.name} is not a SMART Studio project (not UTF-8 text)") from None
    return Project.from_json(text)


def save_project(project: Project, path: str | os.PathLike) -> None:
    """Write atomically: a crash mid-save leaves the previous file intact."""
    try:
        atomic_write_text(path, project.to_json())
    except OSError as exc:
        raise ProjectError(f"cannot save {Path(path).name}: {exc.strerror or exc}") from None
