"""Shared fixtures/helpers for the studio tests (imported by the test_studio_* modules)."""

from __future__ import annotations

import pytest
import shiboken6
from PySide6.QtCore import QEvent, QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication, QMessageBox

from engine.music import Clip, Note


class MessageBoxes:
    """Records QMessageBox calls instead of showing them (tests must never block)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.questions: list[str] = []
        self.answer = QMessageBox.Discard

    def warning(self, parent, title, text, *a, **k):
        self.warnings.append(text)
        return QMessageBox.Ok

    def question(self, parent, title, text, *a, **k):
        self.questions.append(text)
        return self.answer


@pytest.fixture
def boxes(monkeypatch) -> MessageBoxes:
    rec = MessageBoxes()
    monkeypatch.setattr(QMessageBox, "warning", rec.warning)
    monkeypatch.setattr(QMessageBox, "question", rec.question)
    return rec


@pytest.fixture
def make_window(qtbot, tmp_path, boxes, monkeypatch):
    from studio.mainwindow import MainWindow

    # The musician's picks (engine.preferences' profile) go to the test's folder, never the user's.
    monkeypatch.setenv("SMART_PREFERENCES_DIR", str(tmp_path / "profile-preferences"))
    created = []

    def make(track: bool = True, **kw):
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
        w = MainWindow(settings=settings, recovery_dir=tmp_path / "recovery", audio=False, **kw)
        if track:  # untracked: the test destroys it itself (crash simulation)
            qtbot.addWidget(w)
        w.resize(1200, 800)
        w.show()
        qtbot.waitExposed(w)
        created.append(w)
        return w

    yield make
    for w in created:
        if shiboken6.isValid(w):
            w.shutdown()


@pytest.fixture
def window(make_window):
    return make_window()


def sketch(n: int = 8, ppq: int = 480) -> Clip:
    return Clip([Note(i * ppq, 60 + (i % 5), ppq // 2, 60 + i) for i in range(n)], ppq)


def note_point(grid, note: Note, where: str = "middle") -> QPointF:
    geo = grid.geo
    y = geo.pitch_to_y(note.pitch) + geo.row_height / 2
    if where == "end":
        x = geo.tick_to_x(note.end) - 2
    else:
        x = geo.tick_to_x(note.start) + min(10.0, note.duration * geo.px_per_tick / 2)
    return QPointF(x, y)


def cell_point(grid, tick: float, pitch: int) -> QPointF:
    geo = grid.geo
    return QPointF(geo.tick_to_x(tick) + 1, geo.pitch_to_y(pitch) + geo.row_height / 2)


def mouse(widget, kind: str, pos: QPointF, button=Qt.LeftButton, mods=Qt.NoModifier) -> None:
    etype = {"press": QEvent.MouseButtonPress, "move": QEvent.MouseMove, "release": QEvent.MouseButtonRelease,
             "double": QEvent.MouseButtonDblClick}[kind]
    buttons = Qt.NoButton if kind == "release" else button
    ev = QMouseEvent(etype, pos, QPointF(widget.mapToGlobal(pos.toPoint())),
                     Qt.NoButton if kind == "move" else button, buttons, mods)
    QApplication.sendEvent(widget, ev)


def drag(widget, start: QPointF, end: QPointF, mods=Qt.NoModifier, steps: int = 4) -> None:
    mouse(widget, "press", start, mods=mods)
    for i in range(1, steps + 1):
        t = i / steps
        mouse(widget, "move", QPointF(start.x() + (end.x() - start.x()) * t, start.y() + (end.y() - start.y()) * t),
              mods=mods)
    mouse(widget, "release", end, mods=mods)


def click(widget, pos: QPointF, button=Qt.LeftButton, mods=Qt.NoModifier) -> None:
    mouse(widget, "press", pos, button, mods)
    mouse(widget, "release", pos, button, mods)


def wheel(widget, pos: QPointF, delta: int, mods=Qt.NoModifier) -> None:
    ev = QWheelEvent(pos, QPointF(widget.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, delta),
                     Qt.NoButton, mods, Qt.NoScrollPhase, False)
    QApplication.sendEvent(widget, ev)
