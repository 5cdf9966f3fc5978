"""Ghost notes: translucent, coloured candidate notes drawn over the note grid.

`GhostOverlay` is a transparent child of the grid's viewport (mouse events pass through to the
grid), so the grid's tile cache and editing stay untouched. It paints only the visible notes of
each layer; streaming additions repaint just the rectangles of the new notes.

    overlay = GhostOverlay(editor.grid)
    overlay.set_ghost_notes([(notes_a, QColor("#f0a")), (notes_b, QColor("#0af"))])
    overlay.add_notes(1, [note])          # a streamed note of layer 1
    overlay.set_emphasis(1)               # the chosen candidate stands out, the others dim
    overlay.set_region((start, end))      # the bars an infill rewrites (shaded)
"""

from __future__ import annotations

import time

from PySide6.QtCore import QEvent, QObject, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QWidget

from engine.music import Note
from studio.editor.geometry import NUM_PITCHES

REGION_SHADE = QColor(0x10, 0x12, 0x16, 110)
REGION_EDGE = QColor(0xFF, 0xD0, 0x40, 170)


class GhostLayer:
    __slots__ = ("notes", "colour", "visible")

    def __init__(self, notes: list[Note], colour: QColor, visible: bool = True) -> None:
        self.notes = list(notes)
        self.colour = QColor(colour)
        self.visible = visible


class GhostOverlay(QWidget):
    """Candidate notes over the roll. `first_painted` fires with the monotonic time of the first
    paint that shows a ghost note after `reset_paint_clock()` (for latency measurements)."""

    first_painted = Signal(float)

    def __init__(self, grid) -> None:
        super().__init__(grid.viewport())
        self.grid = grid
        self.geo = grid.geo
        self.layers: list[GhostLayer] = []
        self.emphasis: int | None = None
        self.region: tuple[int, int] | None = None
        self._clock_armed = False
        self.last_first_paint: float | None = None
        self.setAttribute(Qt.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WA_NoSystemBackground)
        self.setFocusPolicy(Qt.NoFocus)
        grid.viewport().installEventFilter(self)
        self.geo.changed.connect(self.update)
        self.setGeometry(grid.viewport().rect())
        self.raise_()
        self.show()

    # ------------------------------------------------------------------ API
    def set_ghost_notes(self, layers: list[tuple[list[Note], QColor]]) -> None:
        """Replace all layers: one (notes, colour) per candidate."""
        self.layers = [GhostLayer(notes, colour) for notes, colour in layers]
        if self.emphasis is not None and self.emphasis >= len(self.layers):
            self.emphasis = None
        self.update()

    def add_notes(self, layer: int, notes: list[Note]) -> None:
        """Append streamed notes to a layer (created empty as needed) and repaint only where they are."""
        while layer >= len(self.layers):
            self.layers.append(GhostLayer([], QColor(Qt.white)))
        self.layers[layer].notes.extend(notes)
        for n in notes:
            self.update(self._note_rect(n).adjusted(-2, -2, 2, 2).toAlignedRect())

    def set_emphasis(self, layer: int | None) -> None:
        if layer != self.emphasis:
            self.emphasis = layer
            self.update()

    def set_region(self, region: tuple[int, int] | None) -> None:
        if region != self.region:
            self.region = region
            self.update()

    def clear(self) -> None:
        self.layers = []
        self.emphasis = None
        self.region = None
        self.update()

    def note_count(self) -> int:
        return sum(len(layer.notes) for layer in self.layers)

    def reset_paint_clock(self) -> None:
        """Arm `first_painted` for the next paint that shows at least one ghost note."""
        self._clock_armed = True
        self.last_first_paint = None

    # ------------------------------------------------------------------ painting
    def _note_rect(self, n: Note) -> QRectF:
        geo = self.geo
        x = geo.tick_to_x(n.start)
        w = max(n.duration * geo.px_per_tick, 3.0)
        y = geo.pitch_to_y(n.pitch)
        return QRectF(x, y, w, max(1.0, geo.row_height - 1.0))

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.grid.viewport() and event.type() == QEvent.Resize:
            self.setGeometry(self.grid.viewport().rect())
        return False

    def paintEvent(self, event) -> None:
        if not self.layers and self.region is None:
            return
        p = QPainter(self)
        geo = self.geo
        w, h = self.width(), self.height()
        if self.region is not None:
            x0, x1 = geo.tick_to_x(self.region[0]), geo.tick_to_x(self.region[1])
            p.fillRect(QRectF(x0, 0, x1 - x0, h), REGION_SHADE)
            pen = QPen(REGION_EDGE, 1, Qt.DashLine)
            p.setPen(pen)
            p.drawLine(QRectF(x0, 0, 0, h).topLeft(), QRectF(x0, h, 0, 0).topLeft())
            p.drawLine(QRectF(x1, 0, 0, h).topLeft(), QRectF(x1, h, 0, 0).topLeft())
        t0, t1 = geo.x_to_tick(-4), geo.x_to_tick(w + 4)
        p_hi = geo.y_to_pitch(0)
        p_lo = geo.y_to_pitch(h)
        painted = 0
        order = [i for i in range(len(self.layers)) if i != self.emphasis]
        if self.emphasis is not None and self.emphasis < len(self.layers):
            order.append(self.emphasis)  # on top
        for i in order:
            layer = self.layers[i]
            if not layer.visible or not layer.notes:
                continue
            rects = [self._note_rect(n) for n in layer.notes
                     if n.start < t1 and n.end > t0 and p_lo <= n.pitch <= p_hi and 0 <= n.pitch < NUM_PITCHES]
            if not rects:
                continue
            strong = self.emphasis is None or i == self.emphasis
            fill = QColor(layer.colour)
            # Translucent fills with bright edges: clearly not (yet) part of the sketch.
            fill.setAlpha(105 if (self.emphasis is not None and strong) else (80 if strong else 35))
            edge = QColor(layer.colour).lighter(140 if strong else 100)
            edge.setAlpha(255 if strong else 110)
            p.setPen(QPen(edge, 1.5 if i == self.emphasis else 1.0, Qt.SolidLine if strong else Qt.DotLine))
            p.setBrush(fill)
            p.drawRects(rects)
            painted += len(rects)
        p.end()
        if painted and self._clock_armed:
            self._clock_armed = False
            self.last_first_paint = time.monotonic()
            self.first_painted.emit(self.last_first_paint)
