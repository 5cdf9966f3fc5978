"""Shared view geometry of the piano roll: zoom and scroll, tick/pitch <-> pixel mapping.

The note grid, ruler, keyboard and velocity lane all read one `RollGeometry`, so they stay
aligned while scrolling and zooming. Pitch 127 is the top row; tick 0 the left edge.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QObject, Signal

NUM_PITCHES = 128
MIN_PX_PER_QUARTER, MAX_PX_PER_QUARTER = 4.0, 800.0
MIN_ROW_HEIGHT, MAX_ROW_HEIGHT = 4, 40


class RollGeometry(QObject):
    changed = Signal()

    def __init__(self, ppq: int, px_per_quarter: float = 48.0, row_height: int = 12, parent=None) -> None:
        super().__init__(parent)
        self.ppq = ppq
        self.px_per_quarter = px_per_quarter
        self.row_height = row_height
        self.scroll_x = 0.0  # pixels
        self.scroll_y = 0.0

    @property
    def px_per_tick(self) -> float:
        return self.px_per_quarter / self.ppq

    def set_ppq(self, ppq: int) -> None:
        if ppq != self.ppq:
            # Keep the same musical position on the left edge.
            left_tick = self.scroll_x / self.px_per_tick
            self.ppq = ppq
            self.scroll_x = left_tick * self.px_per_tick
            self.changed.emit()

    # ------------------------------------------------------------------ mapping
    def tick_to_x(self, tick: float) -> float:
        return tick * self.px_per_tick - self.scroll_x

    def x_to_tick(self, x: float) -> float:
        return (x + self.scroll_x) / self.px_per_tick

    def pitch_to_y(self, pitch: int) -> float:
        return (NUM_PITCHES - 1 - pitch) * self.row_height - self.scroll_y

    def y_to_pitch(self, y: float) -> int:
        row = math.floor((y + self.scroll_y) / self.row_height)
        return max(0, min(NUM_PITCHES - 1, NUM_PITCHES - 1 - row))

    @property
    def content_height(self) -> int:
        return NUM_PITCHES * self.row_height

    # ------------------------------------------------------------------ changes
    def set_scroll(self, x: float | None = None, y: float | None = None) -> None:
        changed = False
        if x is not None and x != self.scroll_x:
            self.scroll_x, changed = max(0.0, float(x)), True
        if y is not None and y != self.scroll_y:
            self.scroll_y, changed = max(0.0, float(y)), True
        if changed:
            self.changed.emit()

    def zoom_x(self, factor: float, anchor_x: float = 0.0) -> None:
        """Zoom horizontally keeping the tick under `anchor_x` (viewport px) in place."""
        anchor_tick = self.x_to_tick(anchor_x)
        new = min(MAX_PX_PER_QUARTER, max(MIN_PX_PER_QUARTER, self.px_per_quarter * factor))
        if new == self.px_per_quarter:
            return
        self.px_per_quarter = new
        self.scroll_x = max(0.0, anchor_tick * self.px_per_tick - anchor_x)
        self.changed.emit()

    def zoom_y(self, step: int, anchor_y: float = 0.0) -> None:
        anchor_row = (anchor_y + self.scroll_y) / self.row_height
        new = min(MAX_ROW_HEIGHT, max(MIN_ROW_HEIGHT, self.row_height + step))
        if new == self.row_height:
            return
        self.row_height = new
        self.scroll_y = max(0.0, anchor_row * new - anchor_y)
        self.changed.emit()
