"""Recent files, kept in QSettings (most recent first, missing files pruned on display)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

RECENT_KEY = "files/recent"
MAX_RECENT = 10


class RecentFiles:
    def __init__(self, settings: QSettings) -> None:
        self.settings = settings

    def paths(self) -> list[str]:
        value = self.settings.value(RECENT_KEY, [])
        if isinstance(value, str):  # QSettings returns a bare string for one-element lists
            value = [value]
        return [p for p in (value or []) if isinstance(p, str)]

    def existing(self) -> list[str]:
        return [p for p in self.paths() if Path(p).exists()]

    def add(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        items = [path] + [p for p in self.paths() if p != path]
        self.settings.setValue(RECENT_KEY, items[:MAX_RECENT])

    def remove(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        self.settings.setValue(RECENT_KEY, [p for p in self.paths() if p != path])

    def clear(self) -> None:
        self.settings.setValue(RECENT_KEY, [])
