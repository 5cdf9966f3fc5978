"""WAV export on a worker thread: the UI stays responsive while TinySoundFont renders."""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import QObject, QThread, Signal

from engine.music import Clip

EXPORT_SAMPLE_RATE = 44100


class WavExportJob(QObject):
    """Renders `clip` and writes `path`. Signals arrive on the UI thread (queued)."""

    stage = Signal(str)
    finished = Signal(str)  # path written
    failed = Signal(str)  # one-line reason
    cancelled = Signal()

    def __init__(self, clip: Clip, path: str | Path, soundfont: str | None, sample_rate: int = EXPORT_SAMPLE_RATE):
        super().__init__()
        self.clip, self.path, self.soundfont, self.sample_rate = clip, Path(path), soundfont, sample_rate
        self._cancel = threading.Event()
        self._thread = QThread()
        self._thread.setObjectName("wav-export")
        self.moveToThread(self._thread)
        self._thread.started.connect(self._run)
        # The job lives until its thread ends; callers keep a reference meanwhile.
        for sig in (self.finished, self.failed, self.cancelled):
            sig.connect(self._thread.quit)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        # The renderer cannot be interrupted mid-call; the result is simply not written.
        self._cancel.set()

    def wait(self, ms: int = 30000) -> bool:
        return self._thread.wait(ms)

    @property
    def running(self) -> bool:
        return self._thread.isRunning()

    def _run(self) -> None:
        try:
            from engine.render import render, save_wav

            self.stage.emit(f"Rendering {self.clip.duration_seconds:.1f} s of audio…")
            audio = render(self.clip, self.sample_rate, soundfont=self.soundfont)
            if self._cancel.is_set():
                self.cancelled.emit()
                return
            self.stage.emit("Writing the WAV file…")
            save_wav(self.path, audio, self.sample_rate)
        except Exception as exc:  # SoundFontError, AudioFileError, RenderError, OSError
            self.failed.emit(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        self.finished.emit(str(self.path))
