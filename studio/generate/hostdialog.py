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

from studio.generate.hostconn import LOCAL, REMOTE
from studio.theme import STYLE_DIM


class HostDialog(QDialog):
    def __init__(self, mode: str, model_dir: str, url: str, token: str, parent: QWidget | None = None) -> None:
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
        form = QFormLayout()
        form.addRow(self.local)
        form.addRow("Model folder:", row)
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
        for edit in (self.model_dir, self.url, self.token):  # placeholders are read in full, not cut
            hint = edit.fontMetrics().horizontalAdvance(edit.placeholderText()) + 24
            edit.setMinimumWidth(max(edit.minimumWidth(), hint))

    def _sync(self) -> None:
        local = self.local.isChecked()
        self.model_dir.setEnabled(local)
        self.url.setEnabled(not local)
        self.token.setEnabled(not local)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Model Folder", self.model_dir.text())
        if path:
            self.model_dir.setText(path)

    def values(self) -> tuple[str, str, str, str]:
        return (LOCAL if self.local.isChecked() else REMOTE, self.model_dir.text().strip(), self.url.text().strip(),
                self.token.text().strip())
