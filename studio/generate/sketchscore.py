"""The sketch's own MAA scores: re-scored per 10-s window on a worker, debounced after edits, shown as a
strip over the roll and a one-line summary."""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer

from engine.api import MaaStatus
from engine.maa_weights import AXES
from studio.generate.jobs import SketchScoreJob
from studio.generate.scorestrip import ScoreStrip
from studio.theme import STYLE_DIM, STYLE_OK, STYLE_WARN

RESCORE_DEBOUNCE_MS = 1500


class SketchScorer(QObject):
    """Scores `document.clip` through `host` whenever it changed and MAA is usable there."""

    def __init__(self, document, host, grid, label, parent=None) -> None:
        super().__init__(parent)
        self.doc, self.host, self.label = document, host, label
        self.strip = ScoreStrip(grid)
        self.scores: dict | None = None  # the last complete result
        self._job: SketchScoreJob | None = None
        self._serial = 0  # bumped by every edit
        self._scored = -1  # the serial the shown scores belong to
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(RESCORE_DEBOUNCE_MS)
        self._timer.timeout.connect(self.rescore)

    @property
    def up_to_date(self) -> bool:
        """The shown scores are those of the sketch as it is now."""
        return self._scored == self._serial

    @property
    def running(self) -> bool:
        return self._job is not None

    def _usable(self) -> bool:
        return self.host.connected and self.host.maa_usable()

    def sketch_changed(self) -> None:
        self._serial += 1
        self.strip.set_stale(True)
        self.schedule()

    def schedule(self, immediately: bool = False) -> None:
        if self._usable():
            self._timer.start(0 if immediately else RESCORE_DEBOUNCE_MS)

    def rescore(self) -> None:
        """Score the sketch per 10-s window on a worker."""
        if not self._usable():
            return
        if not self.doc.notes:
            self.strip.clear()
            self.label.setText("The sketch is empty: nothing to score")
            self._scored = self._serial
            return
        if self._job is not None:
            self._job.cancel()  # it ends after its current window; a new one starts then
            return
        job = SketchScoreJob(self.host.client, self.doc.clip, self._serial)
        job.window.connect(self._on_window)
        job.done.connect(self._on_done)
        job.failed.connect(self._on_failed)
        job.finished_job.connect(self._on_finished)
        self._job = job
        job.start()
        self.label.setText("Scoring the sketch…")
        self.label.setStyleSheet(STYLE_DIM)

    def clear(self) -> None:
        """No scores to show (MAA unusable, or a new project)."""
        self.strip.clear()
        self.label.setText("")
        self.scores = None

    def stop(self) -> None:
        self._timer.stop()
        if self._job is not None:
            self._job.cancel()
            self._job.wait(5000)

    def _on_window(self, i: int, window: dict) -> None:
        job = self.sender()
        if job is not self._job or job.serial != self._serial:
            return
        self.strip.set_window(i, window, self.host.maa_status() == MaaStatus.RANDOM_WEIGHTS)

    def _on_done(self, result: dict) -> None:
        if result["serial"] != self._serial:
            return  # the sketch changed meanwhile; the next job scores the new one
        self._scored = result["serial"]
        random_weights = bool(result.get("random_weights"))
        self.scores = result
        self.strip.set_windows(result["windows"], random_weights)
        overall = result.get("overall")
        if overall:
            text = "Sketch: " + "  ".join(f"{a} {overall[a]:.2f}" for a in AXES)
            if random_weights:
                text += "  — random weights, test only"
            self.label.setText(text)
            self.label.setStyleSheet(STYLE_WARN if random_weights else STYLE_OK)

    def _on_failed(self, reason: str) -> None:
        self.label.setText(f"Sketch not scored: {reason}")
        self.label.setStyleSheet(STYLE_WARN)

    def _on_finished(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            job.wait(2000)
        if self._scored != self._serial:
            self.schedule()
