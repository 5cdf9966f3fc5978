"""The taste box of the Generate panel: pairs collected, whether the taste model is ready and how well it
agrees; Fit, Export…, Reset. The store behind it (the musician's picks and the model fit on them) is
`studio.host.taste.TasteStore`, owned by the main window."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from engine.taste import MIN_PAIRS
from studio.host.taste import TasteStore


class TasteSection(QGroupBox):
    """Pairs collected, whether the model is ready and how well it agrees; Fit, Export…, Reset."""

    def __init__(self, store: TasteStore, parent=None) -> None:
        super().__init__("Your taste", parent)
        self.store = store
        col = QVBoxLayout(self)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        col.addWidget(self.label)
        self.chk_project = QCheckBox("Also keep my picks with this project")
        self.chk_project.setToolTip(f"Your picks always go to your profile ({store.profile_dir}); ticked, a saved "
                                    "project also keeps its own copy next to it (SONG.preferences)")
        self.chk_project.setChecked(store.keep_with_project)
        self.chk_project.toggled.connect(store.set_keep_with_project)
        col.addWidget(self.chk_project)
        self.btn_fit = QPushButton("Fit")
        self.btn_fit.setToolTip("Learn your taste from your picks (a few seconds, in the background)")
        self.btn_fit.clicked.connect(self.fit)
        self.btn_export = QPushButton("Export…")
        self.btn_export.setToolTip("Save all your picks (MIDI and choices) as a zip file")
        self.btn_export.clicked.connect(self.export)
        self.btn_reset = QPushButton("Reset…")
        self.btn_reset.setToolTip("Forget all your picks and the taste learnt from them")
        self.btn_reset.clicked.connect(self.reset)
        row = QHBoxLayout()
        for b in (self.btn_fit, self.btn_export, self.btn_reset):
            row.addWidget(b)
        col.addLayout(row)
        store.changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        text, style = self.store.describe()
        if self.store.fitting:
            text = "Fitting your taste… " + text
        self.label.setText(text)
        self.label.setStyleSheet(style)
        summary = self.store.summary()
        n, need = summary["pairs"], max(0, MIN_PAIRS - summary["decisive"])
        # A fit on fewer decisive picks than the model needs scores nothing: Fit waits for them.
        self.btn_fit.setEnabled(need == 0 and not self.store.fitting)
        self.btn_fit.setToolTip("Learn your taste from your picks (a few seconds, in the background)" if need == 0
                                else f"Needs {need} more decisive pick{'s' if need != 1 else ''} (at least "
                                     f"{MIN_PAIRS}; ties do not count): Accept with several candidates shown, "
                                     "or Compare A/B")
        self.btn_export.setEnabled(n > 0)
        self.btn_reset.setEnabled(n > 0 or self.store.model is not None)

    def fit(self) -> Future:
        fut = self.store.fit()
        self.refresh()
        return fut

    def export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export your picks", str(Path.home() / "my-taste.zip"),
                                              "Zip archives (*.zip)")
        if path:
            self.store.export(path)
            self.store.message.emit(f"Exporting your picks to {path}", False)

    def reset(self) -> bool:
        n = self.store.summary()["pairs"]
        answer = QMessageBox.question(self, "Forget your taste?",
                                      f"Delete all {n} picks in your profile and the taste learnt from them? "
                                      "This cannot be undone (Export… first to keep a copy).")
        if answer != QMessageBox.Yes:
            return False
        self.store.reset()
        return True
