"""The sketch's MAA score per 10-s window, as a thin strip along the top of the roll."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import QWidget

from studio.generate.candidates import RANDOM_SCORE_COLOUR, score_colour

STRIP_HEIGHT = 16


class ScoreStrip(QWidget):
    def __init__(self, grid) -> None:
        super().__init__(grid.viewport())
        self.grid, self.geo = grid, grid.geo
        self.windows: list[dict] = []
        self.axis = "CE"
        self.random_weights = False
        self.stale = False  # the sketch changed since these scores
        self.setAttribute(Qt.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WA_NoSystemBackground)
        grid.viewport().installEventFilter(self)
        self.geo.changed.connect(self.update)
        self._fit()
        self.hide()

    def _fit(self) -> None:
        self.setGeometry(0, 0, self.grid.viewport().width(), STRIP_HEIGHT)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.grid.viewport() and event.type() == QEvent.Resize:
            self._fit()
        return False

    def set_windows(self, windows: list[dict], random_weights: bool) -> None:
        self.windows = list(windows)
        self.random_weights = random_weights
        self.stale = False
        self.setVisible(bool(self.windows))
        self.raise_()
        self.update()

    def set_window(self, i: int, window: dict, random_weights: bool) -> None:
        while len(self.windows) <= i:
            self.windows.append({"start": window["start"], "end": window["end"], "scores": None})
        self.windows[i] = window
        self.random_weights = self.random_weights or random_weights
        self.setVisible(True)
        self.raise_()
        self.update()

    def set_stale(self, stale: bool) -> None:
        if stale != self.stale:
            self.stale = stale
            self.update()

    def set_axis(self, axis: str) -> None:
        self.axis = axis
        self.update()

    def clear(self) -> None:
        self.windows = []
        self.hide()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        font = QFont(self.font())
        font.setPointSizeF(7.5)
        p.setFont(font)
        h = self.height()
        for w in self.windows:
            x0, x1 = self.geo.tick_to_x(w["start"]), self.geo.tick_to_x(w["end"])
            if x1 < 0 or x0 > self.width():
                continue
            r = QRectF(x0 + 1, 1, max(2.0, x1 - x0 - 2), h - 2)
            scores = w.get("scores")
            if not scores:
                p.fillRect(r, QColor(0x30, 0x33, 0x38, 200))
                continue
            value = scores[self.axis]
            colour = QColor(RANDOM_SCORE_COLOUR if self.random_weights else score_colour(value))
            colour.setAlpha(120 if self.stale else 215)
            p.fillRect(r, colour)
            if self.random_weights:
                p.fillRect(r, Qt.BDiagPattern)
            p.setPen(QColor(0x10, 0x10, 0x10))
            text = f"{self.axis} {value:.2f}" + (" (random weights — test only)" if self.random_weights else "")
            if self.stale:
                text += " · outdated"
            p.drawText(r.adjusted(4, 0, -2, 0), Qt.AlignVCenter | Qt.AlignLeft, text)
        p.end()
