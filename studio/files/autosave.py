"""Autosave to a recovery file, and recovery after a crash.

Each window writes `autosave-<pid>-<token>.smartrecovery` (atomically, so a kill -9 at any
moment leaves the previous autosave intact) every N seconds while there are unsaved
changes. A clean exit or a normal save removes it. On the next start, a recovery file whose
owner is gone (another process that no longer runs, or a window of this process that was
destroyed without a clean exit) is offered for recovery.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QStandardPaths, QTimer

from engine.errors import first_line
from engine.music import atomic_write_text, remove_stale_temps
from engine.project import Project, ProjectError

log = logging.getLogger(__name__)

RECOVERY_SUFFIX = ".smartrecovery"
RECOVERY_FORMAT = "smart-studio-recovery"
DEFAULT_INTERVAL_S = 30
# Recovery tokens of live windows in this process (a destroyed window's file is an orphan).
_live_tokens: set[str] = set()


def default_recovery_dir() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.AppDataLocation)
    return Path(base or Path.home() / ".smart-studio") / "recovery"


@dataclass
class RecoveryFile:
    path: Path
    origin: str | None  # the project/MIDI path the work belonged to (None: untitled)
    saved_at: float
    project: Project

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.saved_at))
        name = Path(self.origin).name if self.origin else "an untitled sketch"
        return f"{name}, autosaved {when} ({len(self.project.clip.notes)} notes)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def write_recovery(path: Path, project: Project, origin: str | None) -> None:
    payload = {
        "format": RECOVERY_FORMAT,
        "origin": origin,
        "saved_at": time.time(),
        "project": project.to_dict(),
    }
    atomic_write_text(path, json.dumps(payload, separators=(",", ":")))


def read_recovery(path: Path) -> RecoveryFile:
    """Raises ProjectError (one line) for a file that cannot be read back."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: bad JSON
        raise ProjectError(f"unreadable recovery file {path.name}: {first_line(exc)}") from None
    if not isinstance(data, dict) or data.get("format") != RECOVERY_FORMAT:
        raise ProjectError(f"{path.name} is not a SMART Studio recovery file")
    origin = data.get("origin")
    saved_at = data.get("saved_at")
    if isinstance(saved_at, bool) or not isinstance(saved_at, (int, float)) or not 0 < saved_at < 1e11:
        saved_at = path.stat().st_mtime
    try:
        project = Project.from_dict(data.get("project"))
    except ProjectError as exc:
        raise ProjectError(f"recovery file {path.name}: {exc}") from None
    return RecoveryFile(path, origin if isinstance(origin, str) else None, float(saved_at), project)


def find_orphans(directory: Path, unreadable: list[tuple[Path, str]] | None = None) -> list[RecoveryFile]:
    """Recovery files whose writer is gone, newest first. Unreadable ones are skipped (logged, kept on
    disk, and added to `unreadable` as (path, reason) so the musician can be told they exist), and temp
    files of autosaves that crashed mid-write are removed."""
    if not directory.is_dir():
        return []
    remove_stale_temps(directory, f".autosave-*{RECOVERY_SUFFIX}.*.tmp")
    found = []
    for path in directory.glob(f"autosave-*{RECOVERY_SUFFIX}"):
        parts = path.stem.split("-")
        try:
            pid, token = int(parts[1]), parts[2]
        except (IndexError, ValueError):
            continue
        if pid == os.getpid():
            if token in _live_tokens:
                continue
        elif _pid_alive(pid):
            continue
        try:
            found.append(read_recovery(path))
        except (ProjectError, OSError) as exc:
            log.warning("skipping recovery file %s: %s", path, exc)
            if unreadable is not None:
                unreadable.append((path, str(exc)))
    return sorted(found, key=lambda r: r.saved_at, reverse=True)


class Autosaver(QObject):
    """Writes the window's project to its recovery file every `interval_s` while modified.

    `snapshot()` returns (project, origin path, modified?, change serial).
    """

    def __init__(
        self,
        snapshot: Callable[[], tuple[Project, str | None, bool, int]],
        directory: Path,
        interval_s: float = DEFAULT_INTERVAL_S,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._snapshot = snapshot
        self.directory = Path(directory)
        token = secrets.token_hex(4)
        self.path = self.directory / f"autosave-{os.getpid()}-{token}{RECOVERY_SUFFIX}"
        _live_tokens.add(token)
        # A window destroyed without a clean exit leaves its file behind as an orphan.
        self.destroyed.connect(lambda *_: _live_tokens.discard(token))
        self._token = token
        self._saved_serial: int | None = None
        self.last_error: str | None = None
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.save_now)
        self.set_interval(interval_s)

    def set_interval(self, seconds: float) -> None:
        self.interval_s = float(seconds)
        if seconds > 0:
            self._timer.start(int(seconds * 1000))
        else:
            self._timer.stop()

    def save_now(self) -> bool:
        """Write the recovery file if there are unsaved changes not yet autosaved."""
        project, origin, modified, serial = self._snapshot()
        if not modified:
            self.discard()
            return False
        if serial == self._saved_serial and self.path.exists():
            return False
        try:
            write_recovery(self.path, project, origin)
        except OSError as exc:
            # Autosave must never interrupt work; the status bar shows it.
            self.last_error = f"autosave failed: {exc.strerror or exc}"
            log.warning(self.last_error)
            return False
        self.last_error = None
        self._saved_serial = serial
        return True

    def discard(self) -> None:
        """Remove this window's recovery file (after a save, or on a clean exit)."""
        self._saved_serial = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove recovery file %s: %s", self.path, exc)

    def clean_exit(self) -> None:
        self._timer.stop()
        self.discard()
        _live_tokens.discard(self._token)
