"""Host settings: the embedded local host (model folder, MAA weights) or a remote host (URL + token)."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from studio.host.connection import LOCAL, REMOTE
from studio.host.downloads import maa_file_problem
from studio.theme import STYLE_DIM, STYLE_WARN


class HostDialog(QDialog):
    def __init__(self, mode: str, model_dir: str, url: str, token: str, parent: QWidget | None = None,
                 maa_path: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Generation Host")
        self.local = QRadioButton("Local host on this computer (CPU, started by the studio)")
        self.remote = QRadioButton("Remote host (e.g. a GPU server running `smart serve`)")
        group = QButtonGroup(self)
        group.addButton(self.local)
        group.addButton(self.remote)
        (self.local if mode == LOCAL else self.remote).setChecked(True)
        self.model_dir = QLineEdit(model_dir)
        self.model_dir.setPlaceholderText("the shipped model (resources/models/default)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.model_dir, 1)
        row.addWidget(browse)
        self.url = QLineEdit(url)
        self.url.setPlaceholderText("https://gpu-box:8765")
        self.token = QLineEdit(token)
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("bearer token printed by / given to `smart serve`")
        # The MAA weights the local host scores with: shown, replaceable and clearable here (a wrong file
        # saved earlier must never need a settings file edited by hand).
        self.maa_path = QLineEdit(maa_path)
        self.maa_path.setReadOnly(True)
        self.maa_path.setPlaceholderText("none: downloaded weights or $SMART_MAA_CHECKPOINT, if any")
        self.maa_browse = QPushButton("Choose…")
        self.maa_browse.setToolTip("An MAA checkpoint.pt (or a Hugging Face folder with config.json + "
                                   "model.safetensors); checked before it is kept")
        self.maa_browse.clicked.connect(self._browse_maa)
        self.maa_clear = QPushButton("Clear")
        self.maa_clear.setToolTip("Start the local host without this MAA file")
        self.maa_clear.clicked.connect(lambda: self._set_maa(""))
        maa_row = QHBoxLayout()
        maa_row.addWidget(self.maa_path, 1)
        maa_row.addWidget(self.maa_browse)
        maa_row.addWidget(self.maa_clear)
        self.maa_note = QLabel("")
        self.maa_note.setWordWrap(True)
        self.maa_note.setStyleSheet(STYLE_WARN)
        self.maa_note.hide()
        form = QFormLayout()
        form.addRow(self.local)
        form.addRow("Model folder:", row)
        form.addRow("MAA weights:", maa_row)
        form.addRow("", self.maa_note)
        form.addRow(self.remote)
        form.addRow("URL:", self.url)
        form.addRow("Token:", self.token)
        note = QLabel("The token is stored in the studio's settings file on this computer.")
        note.setWordWrap(True)
        note.setStyleSheet(STYLE_DIM)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)
        self.local.toggled.connect(self._sync)
        self._sync()
        if maa_path:
            problem = maa_file_problem(maa_path)
            if problem:
                self._say_maa(f"{problem}: the local host starts without it. Clear it or choose another.")
        self.maa_clear.setEnabled(bool(maa_path))
        for edit in (self.model_dir, self.maa_path, self.url, self.token):  # placeholders in full, not cut
            hint = edit.fontMetrics().horizontalAdvance(edit.placeholderText()) + 24
            edit.setMinimumWidth(max(edit.minimumWidth(), hint))

    def _sync(self) -> None:
        local = self.local.isChecked()
        self.model_dir.setEnabled(local)
        for w in (self.maa_path, self.maa_browse):
            w.setEnabled(local)
        self.url.setEnabled(not local)
        self.token.setEnabled(not local)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model Folder", self.model_dir.text())
        if path:
            self.model_dir.setText(path)

    def _browse_maa(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "MAA checkpoint", self.maa_path.text(),
                                              "MAA checkpoint (*.pt);;All files (*)")
        if path:
            self.choose_maa(path)

    def choose_maa(self, path: str) -> bool:
        """Keep `path` as the MAA file if it can be MAA weights; else say why and keep the previous one."""
        problem = maa_file_problem(path)
        if problem is not None:
            self._say_maa(f"{problem}. Kept the previous setting.")
            return False
        self._set_maa(path)
        return True

    def _set_maa(self, path: str) -> None:
        self.maa_path.setText(path)
        self.maa_clear.setEnabled(bool(path))
        self.maa_note.hide()

    def _say_maa(self, text: str) -> None:
        self.maa_note.setText(text)
        self.maa_note.show()

    def maa_file(self) -> str:
        """The MAA file the local host should use ("" for none)."""
        return self.maa_path.text().strip()

    def values(self) -> tuple[str, str, str, str]:
        return (LOCAL if self.local.isChecked() else REMOTE, self.model_dir.text().strip(), self.url.text().strip(),
                self.token.text().strip())
