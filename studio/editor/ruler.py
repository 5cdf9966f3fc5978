"""Bar/beat ruler above the grid: click to move the playhead, drag to set the loop region."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QFont, QMouseEvent, QPainter, QPolygonF
from PySide6.QtWidgets import QWidget

from studio import theme
from studio.editor import operations as ops
from studio.editor.document import SketchDocument
from studio.editor.geometry import RollGeometry
from studio.editor.timegrid import BAR, grid_lines

RULER_HEIGHT = 26


class Ruler(QWidget):
    seek_requested = Signal(int)
    loop_dragged = Signal(int, int)  # start, end (ticks), emitted while dragging and on release

    def __init__(self, document: SketchDocument, geometry: RollGeometry, snap_step_fn, parent=None) -> None:
        super().__init__(parent)
        self.doc, self.geo = document, geometry
        self._snap_step = snap_step_fn
        self.playhead_tick = 0.0
        self.loop: tuple[int, int] | None = None
        self.loop_enabled = False
        self._press: QPointF | None = None
        self._dragging = False
        self.setFixedHeight(RULER_HEIGHT)
        self.setCursor(Qt.PointingHandCursor)
        self.setToolTip("Click: move the playhead. Drag: set the loop region.")
        geometry.changed.connect(self.update)
        document.clip_changed.connect(self.update)

    def set_playhead(self, tick: float) -> None:
        self.playhead_tick = tick
        self.update()

    def set_loop(self, loop: tuple[int, int] | None, enabled: bool) -> None:
        self.loop, self.loop_enabled = loop, enabled
        self.update()

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, theme.RULER_BG)
        geo = self.geo
        if self.loop is not None:
            x0, x1 = geo.tick_to_x(self.loop[0]), geo.tick_to_x(self.loop[1])
            colour = theme.LOOP_EDGE_ON if self.loop_enabled else theme.LOOP_EDGE_OFF
            band = QRectF(x0, 0, x1 - x0, 9)
            p.fillRect(band, colour)
        font = QFont(self.font())
        font.setPointSizeF(8.5)
        p.setFont(font)
        t0, t1 = geo.x_to_tick(0), geo.x_to_tick(w)
        bar_px = self.doc.clip.time_signature.ticks_per_bar(self.doc.ppq) * geo.px_per_tick
        label_every = 1 if bar_px >= 36 else (2 if bar_px >= 18 else (4 if bar_px >= 9 else 8))
        beat_px = self.doc.ppq * geo.px_per_tick
        for tick, kind, bar in grid_lines(self.doc.clip, t0, t1, None):
            x = round(geo.tick_to_x(tick))
            if kind == BAR:
                p.fillRect(QRectF(x, 10, 1, h - 10), theme.GRID_BAR)
                if bar % label_every == 0:
                    p.setPen(theme.TEXT)
                    p.drawText(QRectF(x + 3, 9, 60, h - 9), Qt.AlignLeft | Qt.AlignVCenter, str(bar + 1))
            elif beat_px >= 8:
                p.fillRect(QRectF(x, h - 6, 1, 6), theme.TEXT_DIM)
        p.fillRect(QRectF(0, h - 1, w, 1), theme.GRID_BEAT)
        x = geo.tick_to_x(self.playhead_tick)
        p.setPen(Qt.NoPen)
        p.setBrush(theme.PLAYHEAD)
        p.drawPolygon(QPolygonF([QPointF(x - 6, h - 11), QPointF(x + 6, h - 11), QPointF(x, h - 1)]))
        p.end()

    def _tick(self, x: float) -> int:
        return max(0, ops.snap_tick(self.geo.x_to_tick(x), self._snap_step()))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.LeftButton:
            self._press = event.position()
            self._dragging = False

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._press is None:
            return
        if not self._dragging and abs(event.position().x() - self._press.x()) < 4:
            return
        self._dragging = True
        a, b = sorted((self._tick(self._press.x()), self._tick(event.position().x())))
        if b > a:
            self.loop_dragged.emit(a, b)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if self._press is None:
            return
        if not self._dragging:
            self.seek_requested.emit(self._tick(event.position().x()))
        self._press = None
        self._dragging = False
