"""Velocity lane under the grid: one stem per note; click/drag sets velocities, wheel nudges them.

A drag "paints" velocities: every note whose stem the mouse passes over takes the velocity
of the mouse height. When notes are selected, only selected notes are edited, so a chord's
selected voice can be set without touching the others. One drag = one undo step.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QMouseEvent, QPainter, QWheelEvent
from PySide6.QtWidgets import QWidget

from engine.music import Note
from studio import theme
from studio.editor.document import SketchDocument, new_gesture_key
from studio.editor.geometry import RollGeometry
from studio.editor.notegrid import (
    VELOCITY_BUCKET_SHIFT,
    WHEEL_VELOCITY_STEP,
    bucket_velocity,
    fill_rects,
)
from studio.editor.tiles import TileCache
from studio.editor.timegrid import BAR, grid_lines

LANE_HEIGHT = 80
PICK_PX = 4
TOP_MARGIN = 4


class VelocityLane(QWidget):
    def __init__(self, document: SketchDocument, geometry: RollGeometry, grid, parent=None) -> None:
        super().__init__(parent)
        self.doc, self.geo, self.grid = document, geometry, grid
        self._drag: dict | None = None
        self.tiles = TileCache(self.render_area, tile_height=LANE_HEIGHT)
        self.setFixedHeight(LANE_HEIGHT)
        self.setToolTip("Velocity: drag over stems to set, wheel to nudge")
        geometry.changed.connect(self.update)
        document.clip_changed.connect(self.update)
        document.selection_changed.connect(self.update)

    # ------------------------------------------------------------------ mapping
    def _y_for(self, velocity: int) -> float:
        usable = self.height() - TOP_MARGIN - 1
        return self.height() - 1 - usable * velocity / 127.0

    def velocity_at(self, y: float) -> int:
        usable = self.height() - TOP_MARGIN - 1
        return max(1, min(127, round((self.height() - 1 - y) * 127.0 / usable)))

    def notes_near(self, x: float) -> list[Note]:
        arr = self.grid._arrays
        if not len(arr.notes):
            return []
        xs = arr.start * self.geo.px_per_tick - self.geo.scroll_x
        near = np.flatnonzero(np.abs(xs - x) <= PICK_PX)
        if self.doc.selection:
            near = near[arr.selected[near]]
        return [arr.notes[i] for i in near]

    # ------------------------------------------------------------------ painting
    def paintEvent(self, event) -> None:
        p = QPainter(self)
        key = (self.grid._version, self.geo.px_per_quarter, self.geo.ppq, self.height())
        self.tiles.paint(p, key, self.geo.scroll_x, 0, self.width(), self.height(), self.devicePixelRatioF())
        p.end()

    def render_area(self, p: QPainter, cx: float, _cy: float, w: int, h: int) -> None:
        """Paint the lane for content x in [cx, cx + w) (see TileCache)."""
        p.fillRect(0, 0, w, h, theme.ROW_BLACK)
        p.setPen(Qt.NoPen)
        ppt = self.geo.px_per_tick
        t0, t1 = cx / ppt, (cx + w) / ppt
        bars = [QRectF(round(t * ppt) - cx, 0, 1, h) for t, kind, _ in grid_lines(self.doc.clip, t0 - 1, t1 + 1, None)
                if kind == BAR]
        fill_rects(p, bars, theme.GRID_BEAT)
        fill_rects(p, [QRectF(0, self._y_for(v), w, 1) for v in (32, 64, 96)], theme.GRID_SUB)
        arr = self.grid._arrays
        margin = 3 / ppt  # stem heads are 5 px wide: include neighbours of the tile edge
        idx = np.flatnonzero((arr.start >= t0 - margin) & (arr.start <= t1 + margin))
        if len(idx):
            xs = (arr.start[idx] * ppt - cx).tolist()
            vels = arr.velocity[idx]
            usable = h - TOP_MARGIN - 1
            ys = (h - 1 - usable * vels / 127.0).tolist()
            # One call per (colour bucket, selected), as in the note grid.
            keys = (vels >> VELOCITY_BUCKET_SHIFT) * 2 + arr.selected[idx]
            order = np.argsort(keys, kind="stable")
            keys_sorted = keys[order]
            bounds = (np.flatnonzero(np.diff(keys_sorted)) + 1).tolist() + [len(order)]
            order_l = order.tolist()
            start = 0
            for end in bounds:
                key = int(keys_sorted[start])
                vel, selected = bucket_velocity(key >> 1), key & 1
                colour = theme.VELOCITY_COLOURS_SELECTED[vel] if selected else theme.VELOCITY_COLOURS[vel]
                members = order_l[start:end]
                fill_rects(p, [QRectF(xs[i], ys[i], 1.5, h - ys[i]) for i in members], colour)
                fill_rects(p, [QRectF(xs[i] - 2, ys[i] - 1, 5, 3) for i in members],
                           theme.SELECTION_OUTLINE if selected else colour)
                start = end
        p.fillRect(QRectF(0, 0, w, 1), theme.GRID_BAR)

    # ------------------------------------------------------------------ editing
    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() != Qt.LeftButton:
            return
        self._drag = {"key": new_gesture_key(), "base": self.doc.clip, "values": {}}
        self._paint_velocity(event.position().x(), event.position().y())

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag is not None:
            self._paint_velocity(event.position().x(), event.position().y())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag = None

    def _paint_velocity(self, x: float, y: float) -> None:
        d = self._drag
        base = d["base"]
        # Onset+pitch identify a note (the editor never holds two with the same pair), and
        # neither changes while painting velocities.
        near = [(n.start, n.pitch) for n in self.notes_near(x)]
        if not near:
            return
        v = self.velocity_at(y)
        d["values"].update((k, v) for k in near)
        values = d["values"]
        new_notes = [replace(n, velocity=values.get((n.start, n.pitch), n.velocity)) for n in base.notes]
        sel_keys = {(n.start, n.pitch) for n in self.doc.selection}
        sel = [n for n in new_notes if (n.start, n.pitch) in sel_keys]
        self.doc.push_clip("Set velocity", base.with_notes(new_notes), sel, d["key"], before=base)
        self.grid.message.emit(f"Velocity {v}")

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y() or event.angleDelta().x()
        targets = frozenset(self.notes_near(event.position().x())) or self.doc.selection
        if targets and delta:
            self.grid.change_velocity(targets, WHEEL_VELOCITY_STEP if delta > 0 else -WHEEL_VELOCITY_STEP)
        event.accept()
