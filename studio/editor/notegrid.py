"""The note grid: a QAbstractScrollArea that paints only what is visible.

Notes are kept as numpy arrays (start, end, pitch, velocity, selected) rebuilt when the clip
or selection changes, so finding the visible notes is one vectorised mask and a repaint draws
them in a few batched `drawRects` calls (one per velocity colour), which keeps scrolling
smooth with thousands of notes (see benchmarks/bench_pianoroll.py).
"""

from __future__ import annotations

import enum
import math
import time

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import QAbstractScrollArea, QWidget

from engine.music import PIANO_PITCH_RANGE, Note
from studio import theme
from studio.editor import operations as ops
from studio.editor.document import SketchDocument, new_gesture_key
from studio.editor.geometry import NUM_PITCHES, RollGeometry
from studio.editor.tiles import TileCache
from studio.editor.timegrid import BAR, BEAT, grid_lines

BLACK_KEYS = {1, 3, 6, 8, 10}
RESIZE_HANDLE_PX = 6
MIN_CONTENT_QUARTERS = 64 * 4  # 64 bars of 4/4 of room to draw in, even in an empty sketch
DRAG_START_PX = 3
WHEEL_VELOCITY_STEP = 4
WHEEL_BURST_S = 0.8  # wheel clicks this close together are one undo step


SELECTED_PEN = QPen(theme.SELECTION_OUTLINE, 2)
NOTE_PENS = [QPen(c, 1) for c in theme.NOTE_BORDER]


# Notes are coloured in 32 velocity steps (4 velocities per colour: indistinguishable by eye,
# and 4x fewer brush changes when painting).
VELOCITY_BUCKET_SHIFT = 2


def bucket_velocity(bucket: int) -> int:
    return min(127, (bucket << VELOCITY_BUCKET_SHIFT) + (1 << VELOCITY_BUCKET_SHIFT) // 2)


def fill_rects(p: QPainter, rects: list[QRectF], colour) -> None:
    """Fill many rectangles in one call (expects the painter's pen to be NoPen)."""
    if rects:
        p.setBrush(colour)
        p.drawRects(rects)


class Tool(enum.Enum):
    SELECT = "select"
    DRAW = "draw"
    ERASE = "erase"


class NoteArrays:
    """Column view of the clip's notes for vectorised hit tests and culling."""

    def __init__(self, notes: list[Note], selection: frozenset[Note]) -> None:
        self.notes = notes
        n = len(notes)
        keys = list(map(ops.note_key, notes))
        self._index = {k: i for i, k in enumerate(keys)}
        if n:
            data = np.array(keys, dtype=np.int64)
            self.start, self.pitch, self.duration, self.velocity = (np.ascontiguousarray(c) for c in data.T)
        else:
            self.start = self.duration = self.pitch = self.velocity = np.zeros(0, dtype=np.int64)
        self.end = self.start + self.duration
        self.end_tick = int(self.end.max()) if n else 0
        self.set_selection(selection)

    def set_selection(self, selection: frozenset[Note]) -> None:
        mask = np.zeros(len(self.notes), dtype=bool)
        index = self._index
        hits = [index.get(ops.note_key(note)) for note in selection]
        mask[[i for i in hits if i is not None]] = True
        self.selected = mask

    def visible(self, t0: float, t1: float, p_lo: int, p_hi: int) -> np.ndarray:
        return np.flatnonzero(
            (self.start < t1) & (self.end > t0) & (self.pitch >= p_lo) & (self.pitch <= p_hi)
        )

    def in_box(self, t0: float, t1: float, p_lo: int, p_hi: int) -> list[Note]:
        return [self.notes[i] for i in self.visible(t0, t1, p_lo, p_hi)]


class _Gesture:
    """State of one mouse drag in the grid."""

    def __init__(self, kind: str, press: QPointF, **kw) -> None:
        self.kind = kind  # "move", "resize", "draw", "band", "erase"
        self.press = press
        self.key = new_gesture_key()
        self.active = kind in ("draw", "erase")  # others start after a few pixels
        self.last = None
        self.__dict__.update(kw)


class NoteGrid(QAbstractScrollArea):
    """Paints and edits the notes. Emits audition requests and status messages."""

    audition_on = Signal(int, int)  # pitch, velocity
    audition_off = Signal(int)
    message = Signal(str)

    def __init__(self, document: SketchDocument, geometry: RollGeometry, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = document
        self.geo = geometry
        self.tool = Tool.SELECT
        self.snap_label = "1/16"
        self.draw_length: int | None = None  # last drawn/resized length; None = one snap step
        self.draw_velocity = 90
        self.playhead_tick = 0.0
        self.loop: tuple[int, int] | None = None
        self.loop_enabled = False
        self._arrays = NoteArrays(document.notes, document.selection)
        self._gesture: _Gesture | None = None
        self._band: QRectF | None = None  # rubber band in viewport px
        self._wheel_key: tuple[int, float, frozenset] | None = None
        self._audition_pitch: int | None = None
        self._version = 0  # bumped whenever notes or selection change (part of the tile key)
        self.tiles = TileCache(self.render_area)
        self.viewport().setMouseTracking(True)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setFrameShape(QAbstractScrollArea.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOn)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOn)
        self.viewport().setAttribute(Qt.WA_OpaquePaintEvent)
        document.clip_changed.connect(self._on_clip_changed)
        document.selection_changed.connect(self._on_selection_changed)
        geometry.changed.connect(self._on_geometry_changed)
        self.horizontalScrollBar().valueChanged.connect(lambda v: self.geo.set_scroll(x=v))
        self.verticalScrollBar().valueChanged.connect(lambda v: self.geo.set_scroll(y=v))
        self._update_scrollbars()

    # ------------------------------------------------------------------ state from outside
    @property
    def snap_step(self) -> float:
        return ops.snap_step(self.snap_label, self.doc.ppq)

    def set_tool(self, tool: Tool) -> None:
        self.tool = tool
        self.viewport().setCursor(
            {Tool.SELECT: Qt.ArrowCursor, Tool.DRAW: Qt.CrossCursor, Tool.ERASE: Qt.ForbiddenCursor}[tool]
        )

    def set_playhead(self, tick: float) -> None:
        old = self.playhead_tick
        self.playhead_tick = tick
        vp = self.viewport()
        for t in (old, tick):
            x = self.geo.tick_to_x(t)
            if -2 <= x <= vp.width() + 2:
                vp.update(int(x) - 2, 0, 5, vp.height())

    def set_loop(self, loop: tuple[int, int] | None, enabled: bool) -> None:
        self.loop, self.loop_enabled = loop, enabled
        self.viewport().update()

    def content_ticks(self) -> float:
        return max(self._arrays.end_tick + 8 * 4 * self.doc.ppq, MIN_CONTENT_QUARTERS * self.doc.ppq)

    def visible_tick_range(self) -> tuple[float, float]:
        return self.geo.x_to_tick(0), self.geo.x_to_tick(self.viewport().width())

    def scroll_to_tick(self, tick: float, margin_px: float = 40) -> None:
        self.horizontalScrollBar().setValue(int(max(0, tick * self.geo.px_per_tick - margin_px)))

    def scroll_to_pitch(self, pitch: int) -> None:
        y = (NUM_PITCHES - 1 - pitch) * self.geo.row_height - self.viewport().height() / 2
        self.verticalScrollBar().setValue(int(max(0, y)))

    def center_on_notes(self) -> None:
        notes = self.doc.notes
        if notes:
            pitches = sorted(n.pitch for n in notes)
            self.scroll_to_pitch(pitches[len(pitches) // 2])
            # Start at the beginning unless the music starts much later (a pickup stays visible).
            first = notes[0].start
            self.scroll_to_tick(first if first > 8 * 4 * self.doc.ppq else 0, margin_px=0 if first <= 8 * 4 * self.doc.ppq else 40)
        else:
            self.scroll_to_pitch(60)

    # ------------------------------------------------------------------ model changes
    def _on_clip_changed(self) -> None:
        self._version += 1
        self._arrays = NoteArrays(self.doc.notes, self.doc.selection)
        self.geo.set_ppq(self.doc.ppq)
        self._update_scrollbars()
        self.viewport().update()

    def _on_selection_changed(self) -> None:
        self._version += 1
        if self._arrays.notes is not self.doc.notes:
            self._arrays = NoteArrays(self.doc.notes, self.doc.selection)
        else:
            self._arrays.set_selection(self.doc.selection)
        self.viewport().update()

    def _on_geometry_changed(self) -> None:
        self._update_scrollbars()
        self.viewport().update()

    def _update_scrollbars(self) -> None:
        vp = self.viewport()
        h, v = self.horizontalScrollBar(), self.verticalScrollBar()
        width = int(self.content_ticks() * self.geo.px_per_tick)
        for bar, total, page, pos in (
            (h, width, vp.width(), self.geo.scroll_x),
            (v, self.geo.content_height, vp.height(), self.geo.scroll_y),
        ):
            bar.blockSignals(True)
            bar.setRange(0, max(0, total - page))
            bar.setPageStep(max(1, page))
            bar.setSingleStep(max(1, page // 20))
            bar.setValue(int(pos))
            bar.blockSignals(False)
        # The scrollbar clamps; keep the geometry in step with it.
        self.geo.scroll_x = float(min(self.geo.scroll_x, h.maximum()))
        self.geo.scroll_y = float(min(self.geo.scroll_y, v.maximum()))

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._update_scrollbars()

    def scrollContentsBy(self, dx: int, dy: int) -> None:
        self.viewport().update()

    # ------------------------------------------------------------------ painting
    def render_key(self) -> tuple:
        """Everything the cached picture depends on (see TileCache)."""
        geo = self.geo
        return (self._version, geo.px_per_quarter, geo.row_height, geo.ppq, self.snap_label, self.loop,
                self.loop_enabled)

    def paintEvent(self, event) -> None:
        vp = self.viewport()
        p = QPainter(vp)
        w, h = vp.width(), vp.height()
        geo = self.geo
        self.tiles.paint(p, self.render_key(), geo.scroll_x, geo.scroll_y, w, h, vp.devicePixelRatioF())
        # Overlays that move without an edit: rubber band, playhead.
        if self._band is not None:
            p.setPen(QPen(theme.RUBBER_BAND_EDGE, 1))
            p.setBrush(theme.RUBBER_BAND)
            p.drawRect(self._band.normalized())
        x = geo.tick_to_x(self.playhead_tick)
        if -1 <= x <= w + 1:
            p.fillRect(QRectF(x - 0.5, 0, 1.5, h), theme.PLAYHEAD)
        p.end()

    def render_area(self, p: QPainter, cx: float, cy: float, w: int, h: int) -> None:
        """Paint rows, grid lines and notes of the content area at (cx, cy) (content pixels)."""
        geo = self.geo
        rh = geo.row_height
        ppt = geo.px_per_tick
        p_hi = max(0, min(NUM_PITCHES - 1, NUM_PITCHES - 1 - math.floor(cy / rh)))
        p_lo = max(0, min(NUM_PITCHES - 1, NUM_PITCHES - 1 - math.floor((cy + h) / rh)))

        def row_y(pitch: int) -> float:
            return (NUM_PITCHES - 1 - pitch) * rh - cy

        # Rows: black-key rows shaded, a line under every C (one batched call per colour).
        p.fillRect(0, 0, w, h, theme.ROW_WHITE)
        black, c_lines = [], []
        for pitch in range(p_lo, p_hi + 1):
            y = row_y(pitch)
            if pitch % 12 in BLACK_KEYS:
                black.append(QRectF(0, y, w, rh))
            elif pitch % 12 == 0:
                c_lines.append(QRectF(0, y + rh - 1, w, 1))
        p.setPen(Qt.NoPen)
        fill_rects(p, black, theme.ROW_BLACK)
        fill_rects(p, c_lines, theme.ROW_C_LINE)
        if row_y(NUM_PITCHES - 1) > 0:  # below pitch 0 / above 127: outside the roll
            p.fillRect(QRectF(0, 0, w, row_y(NUM_PITCHES - 1)), theme.BACKGROUND)
        if row_y(-1) < h:
            p.fillRect(QRectF(0, row_y(-1), w, h - row_y(-1)), theme.BACKGROUND)
        lo, hi = PIANO_PITCH_RANGE
        if p_hi > hi:
            p.fillRect(QRectF(0, 0, w, row_y(hi)), theme.OUT_OF_PIANO)
        if p_lo < lo:
            y = row_y(lo - 1)
            p.fillRect(QRectF(0, y, w, h - y), theme.OUT_OF_PIANO)
        t0, t1 = cx / ppt, (cx + w) / ppt
        self._paint_grid_lines(p, cx, t0, t1, h)
        if self.loop is not None:  # under the notes, so their colours stay true
            x0, x1 = self.loop[0] * ppt - cx, self.loop[1] * ppt - cx
            p.fillRect(QRectF(x0, 0, x1 - x0, h), theme.LOOP_ON if self.loop_enabled else theme.LOOP_OFF)
        self._paint_notes(p, cx, cy, t0, t1, p_lo, p_hi)

    def _paint_grid_lines(self, p: QPainter, cx: float, t0: float, t1: float, h: int) -> None:
        geo = self.geo
        step = self.snap_step
        beat_px = self.doc.ppq * geo.px_per_tick
        sub = step if step > 1 and step * geo.px_per_tick >= 6 else None
        bar_only = beat_px < 5  # zoomed far out: beats would be a grey wash
        lines: dict[int, list[QRectF]] = {BAR: [], BEAT: [], 0: []}
        ppt = geo.px_per_tick
        for tick, kind, _bar in grid_lines(self.doc.clip, t0 - 1, t1 + 1, sub):
            if bar_only and kind != BAR:
                continue
            lines[kind].append(QRectF(round(tick * ppt) - cx, 0, 1, h))
        p.setPen(Qt.NoPen)
        fill_rects(p, lines[0], theme.GRID_SUB)
        fill_rects(p, lines[BEAT], theme.GRID_BEAT)
        fill_rects(p, lines[BAR], theme.GRID_BAR)

    def _paint_notes(self, p: QPainter, cx: float, cy: float, t0: float, t1: float, p_lo: int, p_hi: int) -> None:
        arr = self._arrays
        idx = arr.visible(t0, t1, p_lo, p_hi)
        if len(idx) == 0:
            return
        ppt, rh = self.geo.px_per_tick, self.geo.row_height
        xs = arr.start[idx] * ppt - cx
        ws = np.maximum(arr.duration[idx] * ppt, 2.0)
        ys = (NUM_PITCHES - 1 - arr.pitch[idx]) * rh - cy
        # Batch by (colour bucket, selected): one brush change per colour, not per note.
        keys = (arr.velocity[idx] >> VELOCITY_BUCKET_SHIFT) * 2 + arr.selected[idx]
        order = np.argsort(keys, kind="stable")
        keys_sorted = keys[order]
        bounds = (np.flatnonzero(np.diff(keys_sorted)) + 1).tolist() + [len(order)]
        h = max(1.0, rh - 1.0)
        xs_l, ws_l, ys_l = xs.tolist(), ws.tolist(), ys.tolist()
        order_l = order.tolist()
        draw_outline = rh >= 6 and len(idx) < 4000
        start = 0
        for end in bounds:
            key = int(keys_sorted[start])
            vel, selected = bucket_velocity(key >> 1), key & 1
            if selected:
                p.setPen(SELECTED_PEN)
                p.setBrush(theme.VELOCITY_COLOURS_SELECTED[vel])
            else:
                p.setPen(NOTE_PENS[vel] if draw_outline else Qt.NoPen)
                p.setBrush(theme.VELOCITY_COLOURS[vel])
            p.drawRects([QRectF(xs_l[i], ys_l[i], ws_l[i], h) for i in order_l[start:end]])
            start = end

    # ------------------------------------------------------------------ hit testing
    def note_at(self, pos: QPointF) -> tuple[Note | None, bool]:
        """The note under `pos` (selected notes win when stacked) and whether on its end handle."""
        arr = self._arrays
        if not len(arr.notes):
            return None, False
        tick = self.geo.x_to_tick(pos.x())
        pitch = self.geo.y_to_pitch(pos.y())
        slack = 2.0 / self.geo.px_per_tick  # very short notes stay clickable
        hits = np.flatnonzero((arr.pitch == pitch) & (arr.start <= tick) & (arr.end + slack > tick))
        if len(hits) == 0:
            return None, False
        sel_hits = hits[arr.selected[hits]]
        i = int((sel_hits if len(sel_hits) else hits)[-1])
        note = arr.notes[i]
        end_x = self.geo.tick_to_x(note.end)
        width_px = note.duration * self.geo.px_per_tick
        on_handle = end_x - pos.x() <= min(RESIZE_HANDLE_PX, width_px / 3)
        return note, on_handle

    # ------------------------------------------------------------------ mouse
    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus(Qt.MouseFocusReason)
        pos = event.position()
        mods = event.modifiers()
        note, on_handle = self.note_at(pos)
        if event.button() == Qt.RightButton:
            if note is not None:
                self._delete([note], "Delete note")
            return
        if event.button() != Qt.LeftButton:
            return
        if self.tool == Tool.ERASE:
            self._gesture = _Gesture("erase", pos, base=self.doc.clip, erased=set())
            self._erase_at(pos)
            return
        if note is not None:
            sel = set(self.doc.selection)
            if mods & Qt.ControlModifier:
                sel ^= {note}
                self.doc.set_selection(sel)
                return
            if mods & Qt.ShiftModifier:
                sel.add(note)
            elif note not in sel:
                sel = {note}
            self.doc.set_selection(sel)
            self._start_audition(note.pitch, note.velocity)
            self._gesture = _Gesture(
                "resize" if on_handle else "move",
                pos,
                base=self.doc.clip,
                base_sel=frozenset(sel),
                grabbed=note,
            )
            return
        if self.tool == Tool.DRAW:
            self._draw_note_at(pos)
            return
        # Select tool on empty space: rubber band.
        additive = bool(mods & (Qt.ShiftModifier | Qt.ControlModifier))
        self._gesture = _Gesture("band", pos, base_sel=self.doc.selection if additive else frozenset())
        if not additive:
            self.doc.clear_selection()

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        # A double click on empty space draws a note with the select tool too (as in most DAWs).
        if event.button() == Qt.LeftButton and self.tool == Tool.SELECT:
            note, _ = self.note_at(event.position())
            if note is None:
                self._draw_note_at(event.position())
                return
        super().mouseDoubleClickEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position()
        g = self._gesture
        if g is None:
            if self.tool != Tool.ERASE:
                note, on_handle = self.note_at(pos)
                shape = Qt.SizeHorCursor if note is not None and on_handle else (
                    Qt.CrossCursor if self.tool == Tool.DRAW else Qt.ArrowCursor
                )
                self.viewport().setCursor(shape)
            return
        if not g.active:
            if (pos - g.press).manhattanLength() < DRAG_START_PX:
                return
            g.active = True
        if g.kind == "band":
            self._band = QRectF(g.press, pos)
            r = self._band.normalized()
            t0, t1 = self.geo.x_to_tick(r.left()), self.geo.x_to_tick(r.right())
            p_hi, p_lo = self.geo.y_to_pitch(r.top()), self.geo.y_to_pitch(r.bottom())
            self.doc.set_selection(set(g.base_sel) | set(self._arrays.in_box(t0, t1, p_lo, p_hi)))
            self.viewport().update()
        elif g.kind == "move":
            self._drag_move(g, pos, event.modifiers())
        elif g.kind in ("resize", "draw"):
            self._drag_resize(g, pos, event.modifiers())
        elif g.kind == "erase":
            self._erase_at(pos)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        g = self._gesture
        self._gesture = None
        self._stop_audition()
        if g is not None and g.kind == "band":
            self._band = None
            self.viewport().update()

    # ------------------------------------------------------------------ gestures
    def _snap(self, tick: float, modifiers, mode: str = "round") -> int:
        # Alt bypasses the grid for fine placement.
        step = 1.0 if modifiers & Qt.AltModifier else self.snap_step
        return ops.snap_tick(tick, step, mode=mode)

    def _drag_move(self, g: _Gesture, pos: QPointF, mods) -> None:
        dt_raw = self.geo.x_to_tick(pos.x()) - self.geo.x_to_tick(g.press.x())
        new_start = max(0, self._snap(g.grabbed.start + dt_raw, mods))
        dt = new_start - g.grabbed.start
        dp = self.geo.y_to_pitch(pos.y()) - self.geo.y_to_pitch(g.press.y())
        if (dt, dp) == g.last:
            return
        try:
            notes, sel = ops.move_notes(g.base.notes, g.base_sel, dt, dp)
        except ops.EditRefused:
            return
        g.last = (dt, dp)
        text = "Move notes" if len(g.base_sel) > 1 else "Move note"
        self.doc.push_clip(text, g.base.with_notes(notes), sel, g.key, before=g.base)
        if dp:
            self._start_audition(g.grabbed.pitch + dp, g.grabbed.velocity)

    def _drag_resize(self, g: _Gesture, pos: QPointF, mods) -> None:
        step = 1 if mods & Qt.AltModifier else max(1, int(round(self.snap_step)))
        new_end = self._snap(self.geo.x_to_tick(pos.x()), mods)
        new_end = max(new_end, g.grabbed.start + step)
        delta = new_end - g.grabbed.end
        if delta == g.last:
            return
        g.last = delta
        notes, sel = ops.resize_notes(g.base.notes, g.base_sel, delta, min_duration=step)
        text = "Draw note" if g.kind == "draw" else ("Resize notes" if len(g.base_sel) > 1 else "Resize note")
        self.doc.push_clip(text, g.base.with_notes(notes), sel, g.key, before=g.base)
        self.draw_length = new_end - g.grabbed.start

    def _draw_note_at(self, pos: QPointF) -> None:
        step = self.snap_step
        start = max(0, ops.snap_tick(self.geo.x_to_tick(pos.x()), step, mode="floor"))
        length = self.draw_length or max(1, int(round(step if step > 1 else self.doc.ppq / 4)))
        note = Note(start, self.geo.y_to_pitch(pos.y()), length, self.draw_velocity)
        base = self.doc.clip
        notes, sel = ops.add_notes(base.notes, [note])
        g = _Gesture("draw", pos, base=base, base_sel=frozenset(), grabbed=note)
        # The drawn note exists in `base` for the following resize steps of this gesture.
        g.base = base.with_notes(notes)
        g.base_sel = sel
        self.doc.push_clip("Draw note", g.base, sel, g.key, before=base)
        self._gesture = g
        self._start_audition(note.pitch, note.velocity)

    def _erase_at(self, pos: QPointF) -> None:
        g = self._gesture
        note, _ = self.note_at(pos)
        if note is None or note in g.erased:
            return
        g.erased.add(note)
        notes, _ = ops.delete_notes(g.base.notes, g.erased)
        self.doc.push_clip("Erase notes", g.base.with_notes(notes), frozenset(), g.key, before=g.base)

    def _delete(self, notes, text: str) -> None:
        new, sel = ops.delete_notes(self.doc.notes, notes)
        self.doc.push_notes(text, new, sel)

    # ------------------------------------------------------------------ audition
    def _start_audition(self, pitch: int, velocity: int) -> None:
        if self._audition_pitch == pitch:
            return
        self._stop_audition()
        self._audition_pitch = pitch
        self.audition_on.emit(pitch, velocity)

    def _stop_audition(self) -> None:
        if self._audition_pitch is not None:
            self.audition_off.emit(self._audition_pitch)
            self._audition_pitch = None

    # ------------------------------------------------------------------ wheel
    def wheelEvent(self, event: QWheelEvent) -> None:
        mods = event.modifiers()
        delta = event.angleDelta().y() or event.angleDelta().x()
        pos = event.position()
        if mods & Qt.ControlModifier:
            if mods & Qt.ShiftModifier:
                self.geo.zoom_y(1 if delta > 0 else -1, pos.y())
            else:
                self.geo.zoom_x(1.25 if delta > 0 else 0.8, pos.x())
            self._update_scrollbars()
            event.accept()
            return
        if mods & Qt.AltModifier:
            self.wheel_velocity(pos, 1 if delta > 0 else -1)
            event.accept()
            return
        if mods & Qt.ShiftModifier:
            bar = self.horizontalScrollBar()
            bar.setValue(bar.value() - int(delta / 120 * bar.singleStep() * 3))
            event.accept()
            return
        super().wheelEvent(event)

    def wheel_velocity(self, pos: QPointF, clicks: int) -> None:
        """Alt+wheel: velocity of the note under the cursor (all selected ones if it is selected)."""
        note, _ = self.note_at(pos)
        if note is None:
            return
        targets = self.doc.selection if note in self.doc.selection else frozenset([note])
        self.change_velocity(targets, clicks * WHEEL_VELOCITY_STEP)

    def change_velocity(self, targets: frozenset[Note], delta: int) -> None:
        now = time.monotonic()
        key = self._wheel_key
        if key is not None and now - key[1] < WHEEL_BURST_S and key[2] == targets:
            merge = key[0]
        else:
            merge = new_gesture_key()
        notes, sel = ops.add_velocity(self.doc.notes, targets, delta)
        keep_selected = sel if targets == self.doc.selection else self.doc.selection - targets
        self.doc.push_notes("Change velocity", notes, keep_selected, merge)
        self._wheel_key = (merge, now, frozenset(sel))
        if sel:
            v = next(iter(sel)).velocity
            self.message.emit(f"Velocity {v}" if len(sel) == 1 else f"Velocity {delta:+d} on {len(sel)} notes")

    def hideEvent(self, event) -> None:
        self._stop_audition()
        super().hideEvent(event)

