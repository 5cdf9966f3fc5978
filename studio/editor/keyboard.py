"""The piano keyboard left of the grid: one key per row; click to audition a pitch."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QFont, QMouseEvent, QPainter
from PySide6.QtWidgets import QWidget

from studio import theme
from studio.editor.geometry import RollGeometry
from studio.editor.notegrid import BLACK_KEYS

KEYBOARD_WIDTH = 60
NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def pitch_name(pitch: int) -> str:
    """MIDI 60 = C4 (the convention of most DAWs)."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


class PianoKeyboard(QWidget):
    key_pressed = Signal(int, int)  # pitch, velocity
    key_released = Signal(int)

    def __init__(self, geometry: RollGeometry, parent=None) -> None:
        super().__init__(parent)
        self.geo = geometry
        self._down: int | None = None
        self.setFixedWidth(KEYBOARD_WIDTH)
        self.setToolTip("Click a key to hear the pitch")
        self._drawn_for: tuple | None = None
        geometry.changed.connect(self._on_geometry_changed)

    def _on_geometry_changed(self) -> None:
        # Horizontal scrolling and zooming do not move the keys: skip those repaints.
        if (self.geo.scroll_y, self.geo.row_height) != self._drawn_for:
            self.update()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, theme.KEY_WHITE)
        geo = self.geo
        rh = geo.row_height
        self._drawn_for = (geo.scroll_y, rh)
        font = QFont(self.font())
        font.setPointSizeF(max(6.0, min(8.5, rh * 0.7)))
        p.setFont(font)
        black_w = w * 0.6
        for pitch in range(geo.y_to_pitch(h), geo.y_to_pitch(0) + 1):
            y = geo.pitch_to_y(pitch)
            pressed = pitch == self._down
            if pitch % 12 in BLACK_KEYS:
                p.fillRect(QRectF(0, y, black_w, rh), theme.KEY_PRESSED if pressed else theme.KEY_BLACK)
            else:
                if pressed:
                    p.fillRect(QRectF(0, y, w, rh), theme.KEY_PRESSED)
                # Separator under B and E (where two white keys meet) and under every C.
                if pitch % 12 in (0, 5):
                    p.fillRect(QRectF(0, y + rh - 1, w, 1), theme.TEXT_DIM)
            if pitch % 12 == 0 and rh >= 7:
                p.setPen(theme.BACKGROUND)
                p.drawText(QRectF(black_w, y, w - black_w - 3, rh), Qt.AlignRight | Qt.AlignVCenter, pitch_name(pitch))
        p.fillRect(QRectF(w - 1, 0, 1, h), theme.BACKGROUND)
        p.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.LeftButton:
            self._press(self.geo.y_to_pitch(event.position().y()), event.position().x())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._down is not None:
            pitch = self.geo.y_to_pitch(event.position().y())
            if pitch != self._down:
                self._release()
                self._press(pitch, event.position().x())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._release()

    def _press(self, pitch: int, x: float) -> None:
        self._down = pitch
        # Further right on the key = louder, as on a real key struck nearer its edge.
        velocity = int(50 + 70 * min(1.0, max(0.0, x / self.width())))
        self.key_pressed.emit(pitch, velocity)
        self.update()

    def _release(self) -> None:
        if self._down is not None:
            self.key_released.emit(self._down)
            self._down = None
            self.update()
