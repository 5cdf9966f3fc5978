"""The MAA (Meta Audiobox Aesthetics) notice at the top of the Generate panel: whether candidates get
scores, in a musician's words, with the two ways to get the weights when they are missing — download
(size and progress) or a file already on this computer. The weights' location and download live in
`engine.maa_weights` (torch-free); the local host is restarted with new weights by the panel.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from engine.api import MaaStatus
from engine.maa_weights import MAA_DOWNLOAD_BYTES, check_checkpoint
from studio.host.connection import MAA_UNKNOWN
from studio.host.downloads import MaaDownloads, maa_file_problem
from studio.theme import STYLE_DIM, STYLE_OK, STYLE_WARN

AVAILABLE, RANDOM, MISSING, UNKNOWN = MaaStatus.AVAILABLE, MaaStatus.RANDOM_WEIGHTS, MaaStatus.MISSING, MAA_UNKNOWN
SIZE_MB = f"{MAA_DOWNLOAD_BYTES / 1e6:.0f} MB"


def usable(status: MaaStatus | str) -> bool:
    """Scores can be computed (real, or random weights for tests); not while the status is unknown."""
    return status in (AVAILABLE, RANDOM)


class MaaNotice(QFrame):
    """Says what MAA status means for the musician and offers download / choose-a-file when missing.

    `weights_chosen(path)` fires with a usable checkpoint (downloaded or picked); the owner restarts the
    host with it."""

    weights_chosen = Signal(str)
    message = Signal(str)  # one line for the status bar

    def __init__(self, downloads: MaaDownloads, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("maaNotice")
        self.setFrameShape(QFrame.StyledPanel)
        self.status = UNKNOWN
        self.remote = False
        self.reason = ""
        # The studio's one download (the Train panel starts it too): shown here, its weights used from here.
        self.downloads = downloads
        downloads.started.connect(self._on_started)
        downloads.progress.connect(self._on_progress)
        downloads.done.connect(self._on_done)
        downloads.failed.connect(self._on_failed)
        downloads.finished.connect(self._on_finished)
        self._error: str | None = None
        col = QVBoxLayout(self)
        col.setContentsMargins(6, 4, 6, 4)
        col.setSpacing(4)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        col.addWidget(self.label)
        row = QHBoxLayout()
        self.btn_download = QPushButton(f"Download ({SIZE_MB})")
        self.btn_download.setToolTip(f"Fetch the scoring model (facebook/audiobox-aesthetics, {SIZE_MB}) from "
                                     "huggingface.co; you can keep composing meanwhile")
        self.btn_download.clicked.connect(self.download)
        self.btn_file = QPushButton("Use a file I have…")
        self.btn_file.setToolTip("A checkpoint.pt, or a Hugging Face folder with config.json + model.safetensors")
        menu = QMenu(self.btn_file)
        menu.addAction("checkpoint.pt file…", self.choose_file)
        menu.addAction("Hugging Face folder…", self.choose_folder)
        self.btn_file.setMenu(menu)
        row.addWidget(self.btn_download)
        row.addWidget(self.btn_file)
        row.addStretch(1)
        col.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setMaximumHeight(14)
        self.progress.setRange(0, 1000)
        self.progress.hide()
        col.addWidget(self.progress)
        self.show_status(UNKNOWN)

    # ------------------------------------------------------------------ state
    @property
    def downloading(self) -> bool:
        return self.downloads.running

    def show_status(self, status: str, reason: str = "", remote: bool = False) -> None:
        """The host's MAA status (`engine.api.MaaStatus`, or UNKNOWN before a host has answered)."""
        self.status, self.reason, self.remote = status, reason, remote
        missing = status == MISSING
        if status == AVAILABLE:
            text, style = "MAA scores on: every candidate and the sketch get 1–10 ratings.", STYLE_OK
        elif status == RANDOM:
            text, style = ("MAA has RANDOM WEIGHTS — scores are for tests and timing only, not real ratings.",
                           STYLE_WARN + " font-weight: bold;")
        elif missing and remote:
            text, style = ("Scores are off: the MAA scoring model is not installed on the remote host. Generating "
                           "works without it; to get scores there, start that host with `smart serve --maa PATH`, "
                           f"or download it here ({SIZE_MB}) for the local host.", STYLE_WARN)
        elif missing:
            text, style = ("Scores are off: the MAA scoring model (Meta Audiobox Aesthetics) is not installed on "
                           f"this computer. Generating works without it; download it ({SIZE_MB}) or use a copy "
                           "you already have to hear which candidates rate best.", STYLE_WARN)
        else:
            text, style = "Scores appear once the host is running.", STYLE_DIM
        if self._error and status in (MISSING, UNKNOWN):
            text, style = f"Download failed: {self._error}\n{text}", STYLE_WARN
        if not self.downloading:
            self.label.setText(text)
            self.label.setStyleSheet(style)
        self.label.setToolTip(reason)
        self.btn_download.setVisible(missing)
        self.btn_file.setVisible(missing)
        self.btn_download.setEnabled(not self.downloading)
        # Full size only when the musician has something to do; otherwise a quiet line.
        self.setFrameShape(QFrame.StyledPanel if missing or status == RANDOM else QFrame.NoFrame)

    # ------------------------------------------------------------------ download / choose
    def download(self) -> None:
        """Start (or, while running, cancel) the download."""
        if self.downloads.running:
            self.downloads.cancel()
            return
        self.downloads.start()

    def _on_started(self) -> None:
        self._error = None
        self.progress.setValue(0)
        self.progress.show()
        self.btn_download.setEnabled(False)
        self.label.setText(f"Contacting huggingface.co for the MAA scoring model ({SIZE_MB})…")
        self.label.setStyleSheet(STYLE_DIM)

    def _on_progress(self, text: str, fraction: float) -> None:
        self.progress.setValue(int(1000 * fraction))
        self.label.setText(text)
        self.label.setStyleSheet(STYLE_DIM)

    def _on_failed(self, reason: str) -> None:
        self._error = reason
        self.label.setText(f"Download failed: {reason}")
        self.label.setStyleSheet(STYLE_WARN)
        self.message.emit("MAA download failed (no internet?)")

    def _on_done(self, path: str) -> None:
        self.use_weights(path)

    def _on_finished(self) -> None:
        self.progress.hide()
        self.show_status(self.status, self.reason, self.remote)

    def cancel(self) -> None:
        self.downloads.cancel(wait_ms=5000)

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "MAA checkpoint", str(Path.home()),
                                              "MAA checkpoint (*.pt);;All files (*)")
        if path:
            self.use_weights(path)

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "MAA Hugging Face folder", str(Path.home()))
        if path:
            self.use_weights(path)

    def use_weights(self, path: str) -> bool:
        """Check `path` holds MAA weights before anything keeps it (a WAV picked by mistake used to be saved
        and then crash every host start); `weights_chosen` fires with the checkpoint found."""
        problem = maa_file_problem(path)
        if problem is not None:
            self.label.setText(f"{problem}. Nothing was changed: pick checkpoint.pt, or a folder with "
                               "config.json + model.safetensors.")
            self.label.setStyleSheet(STYLE_WARN)
            return False
        self.weights_chosen.emit(str(check_checkpoint(path)))
        return True

    def say(self, text: str, warn: bool = False) -> None:
        self.label.setText(text)
        self.label.setStyleSheet(STYLE_WARN if warn else STYLE_DIM)
