"""The piano-roll editor widget: ruler + keyboard + note grid + velocity lane, and its edit actions.

Arrow-key and Delete actions are scoped to the editor (WidgetWithChildrenShortcut) so they do
not steal keys from the tempo box or other fields; clipboard/undo actions are window-wide and
live in the main window's Edit menu.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QAction, QDrag, QKeySequence, QMouseEvent
from PySide6.QtWidgets import QApplication, QGridLayout, QLabel, QWidget

from engine.music import MidiFileError, Note
from studio import theme
from studio.editor import operations as ops
from studio.editor.clipboard import (
    drag_mime,
    notes_from_mime,
    notes_to_mime,
    put_on_clipboard,
)
from studio.editor.document import SketchDocument
from studio.editor.geometry import (
    MAX_PX_PER_QUARTER,
    MAX_ROW_HEIGHT,
    MIN_PX_PER_QUARTER,
    MIN_ROW_HEIGHT,
    RollGeometry,
)
from studio.editor.keyboard import PianoKeyboard
from studio.editor.notegrid import NoteGrid, Tool
from studio.editor.ruler import Ruler
from studio.editor.velocity import VelocityLane


class PianoRollEditor(QWidget):
    message = Signal(str)  # one-line status messages
    seek_requested = Signal(int)
    loop_dragged = Signal(int, int)
    audition_on = Signal(int, int)
    audition_off = Signal(int)

    def __init__(self, document: SketchDocument, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.doc = document
        self.geo = RollGeometry(document.ppq, parent=self)
        self.grid = NoteGrid(document, self.geo, self)
        self.ruler = Ruler(document, self.geo, lambda: self.grid.snap_step, self)
        self.keyboard = PianoKeyboard(self.geo, self)
        self.velocity_lane = VelocityLane(document, self.geo, self.grid, self)
        lane_label = QLabel("Vel", self)
        lane_label.setAlignment(Qt.AlignCenter)
        lane_label.setStyleSheet(f"color: {theme.TEXT_DIM.name()}; background: {theme.RULER_BG.name()};")
        corner = QLabel("", self)
        corner.setStyleSheet(f"background: {theme.RULER_BG.name()};")
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(corner, 0, 0)
        layout.addWidget(self.ruler, 0, 1)
        layout.addWidget(self.keyboard, 1, 0)
        layout.addWidget(self.grid, 1, 1)
        layout.addWidget(lane_label, 2, 0)
        layout.addWidget(self.velocity_lane, 2, 1)
        layout.setRowStretch(1, 1)
        layout.setColumnStretch(1, 1)
        self.follow = True
        self._playhead = 0.0

        self.grid.message.connect(self.message)
        self.grid.audition_on.connect(self.audition_on)
        self.grid.audition_off.connect(self.audition_off)
        self.keyboard.key_pressed.connect(self.audition_on)
        self.keyboard.key_released.connect(self.audition_off)
        self.ruler.seek_requested.connect(self.seek_requested)
        self.ruler.loop_dragged.connect(self.loop_dragged)
        self._make_actions()
        self.setFocusProxy(self.grid)

    # ------------------------------------------------------------------ actions
    def _action(self, text: str, keys, slot, scoped: bool = False, tip: str = "") -> QAction:
        act = QAction(text, self)
        if keys:
            seqs = keys if isinstance(keys, list) else [keys]
            act.setShortcuts([QKeySequence(k) for k in seqs])
        if scoped:
            act.setShortcutContext(Qt.WidgetWithChildrenShortcut)
            self.addAction(act)
        if tip:
            act.setStatusTip(tip)
        act.triggered.connect(slot)
        return act

    def _make_actions(self) -> None:
        a = self._action
        self.act_cut = a("Cu&t", QKeySequence.Cut, self.cut)
        self.act_copy = a("&Copy", QKeySequence.Copy, self.copy)
        self.act_paste = a("&Paste", QKeySequence.Paste, lambda: self.paste(), tip="Paste at the playhead")
        self.act_duplicate = a("&Duplicate", "Ctrl+D", self.duplicate)
        self.act_select_all = a("Select &All", QKeySequence.SelectAll, self.doc.select_all)
        self.act_select_none = a("Select &None", "Ctrl+Shift+A", self.doc.clear_selection)
        self.act_delete = a("De&lete", [QKeySequence.Delete, "Backspace"], self.delete_selection, scoped=True)
        self.act_up = a("Transpose Up", "Up", lambda: self.transpose(1), scoped=True)
        self.act_down = a("Transpose Down", "Down", lambda: self.transpose(-1), scoped=True)
        self.act_octave_up = a("Transpose Octave Up", "Shift+Up", lambda: self.transpose(12), scoped=True)
        self.act_octave_down = a("Transpose Octave Down", "Shift+Down", lambda: self.transpose(-12), scoped=True)
        self.act_nudge_left = a("Nudge Left", "Left", lambda: self.nudge(-1), scoped=True)
        self.act_nudge_right = a("Nudge Right", "Right", lambda: self.nudge(1), scoped=True)
        self.act_quantize = a("&Quantize to Grid", "Q", self.quantize, scoped=True)
        self.act_vel_up = a("Velocity +8", "Ctrl+Up", lambda: self.velocity_step(8), scoped=True)
        self.act_vel_down = a("Velocity −8", "Ctrl+Down", lambda: self.velocity_step(-8), scoped=True)

    def edit_actions(self) -> list[QAction | None]:
        """For the Edit menu (None = separator)."""
        return [
            self.act_cut, self.act_copy, self.act_paste, self.act_duplicate, self.act_delete, None,
            self.act_select_all, self.act_select_none, None,
            self.act_up, self.act_down, self.act_octave_up, self.act_octave_down,
            self.act_nudge_left, self.act_nudge_right, self.act_vel_up, self.act_vel_down, self.act_quantize,
        ]

    # ------------------------------------------------------------------ edits
    def _selection_or_message(self) -> frozenset[Note]:
        sel = self.doc.selection
        if not sel:
            self.message.emit("Nothing selected")
        return sel

    def delete_selection(self) -> None:
        sel = self._selection_or_message()
        if sel:
            notes, new_sel = ops.delete_notes(self.doc.notes, sel)
            self.doc.push_notes(f"Delete {len(sel)} note{'s' if len(sel) > 1 else ''}", notes, new_sel)

    def transpose(self, semitones: int) -> None:
        sel = self._selection_or_message()
        if not sel:
            return
        try:
            notes, new_sel = ops.move_notes(self.doc.notes, sel, 0, semitones)
        except ops.EditRefused as exc:
            self.message.emit(str(exc))
            return
        self.doc.push_notes(f"Transpose {semitones:+d}", notes, new_sel)

    def nudge(self, direction: int) -> None:
        sel = self._selection_or_message()
        if not sel:
            return
        step = self.grid.snap_step
        # Snap off: nudge by a 1/64 note rather than a single, invisible tick.
        amount = int(round(step)) if step > 1 else max(1, self.doc.ppq // 16)
        try:
            notes, new_sel = ops.move_notes(self.doc.notes, sel, direction * amount, 0)
        except ops.EditRefused as exc:
            self.message.emit(str(exc))
            return
        self.doc.push_notes("Nudge", notes, new_sel)

    def quantize(self) -> None:
        sel = self.doc.selection or frozenset(self.doc.notes)
        if not sel:
            return
        notes, new_sel = ops.quantize_notes(self.doc.notes, sel, self.grid.snap_step)
        self.doc.push_notes(f"Quantize to {self.grid.snap_label}", notes, new_sel if self.doc.selection else ())

    def velocity_step(self, delta: int) -> None:
        sel = self._selection_or_message()
        if sel:
            notes, new_sel = ops.add_velocity(self.doc.notes, sel, delta)
            self.doc.push_notes("Change velocity", notes, new_sel)

    def copy(self) -> bool:
        sel = self._selection_or_message()
        if not sel:
            return False
        put_on_clipboard(notes_to_mime(sorted(sel), self.doc.clip))
        self.message.emit(f"Copied {len(sel)} note{'s' if len(sel) > 1 else ''}")
        return True

    def cut(self) -> None:
        if self.copy():
            notes, new_sel = ops.delete_notes(self.doc.notes, self.doc.selection)
            self.doc.push_notes("Cut", notes, new_sel)

    def paste(self, at_tick: int | None = None) -> None:
        try:
            notes = notes_from_mime(QApplication.clipboard().mimeData(), self.doc.ppq)
        except MidiFileError as exc:
            self.message.emit(f"Cannot paste: {exc}")
            return
        if not notes:
            self.message.emit("The clipboard holds no notes")
            return
        tick = int(self._playhead) if at_tick is None else at_tick
        tick = max(0, ops.snap_tick(tick, self.grid.snap_step))
        try:
            new, sel = ops.paste_notes(self.doc.notes, notes, tick)
        except ops.EditRefused as exc:
            self.message.emit(f"Cannot paste: {exc}")
            return
        self.doc.push_notes(f"Paste {len(notes)} notes", new, sel)

    def duplicate(self) -> None:
        sel = self._selection_or_message()
        if sel:
            notes, new_sel = ops.duplicate_notes(self.doc.notes, sel, self.grid.snap_step)
            self.doc.push_notes("Duplicate", notes, new_sel)

    # ------------------------------------------------------------------ view state
    def set_tool(self, tool: Tool) -> None:
        self.grid.set_tool(tool)

    def set_snap(self, label: str) -> None:
        if label not in ops.SNAP_QUARTERS:
            raise ValueError(f"unknown snap {label!r}")
        self.grid.snap_label = label
        self.grid.draw_length = None
        self.grid.viewport().update()

    def set_playhead(self, tick: float, *, follow: bool = False) -> None:
        self._playhead = tick
        self.grid.set_playhead(tick)
        self.ruler.set_playhead(tick)
        if follow and self.follow:
            t0, t1 = self.grid.visible_tick_range()
            if tick < t0 or tick > t0 + (t1 - t0) * 0.92:
                # Page so the playhead lands near the left edge (less jumpy than centring).
                self.grid.scroll_to_tick(tick, margin_px=self.grid.viewport().width() * 0.08)

    @property
    def playhead(self) -> float:
        return self._playhead

    def set_loop(self, loop: tuple[int, int] | None, enabled: bool) -> None:
        self.grid.set_loop(loop, enabled)
        self.ruler.set_loop(loop, enabled)

    def zoom_x(self, factor: float) -> None:
        self.geo.zoom_x(factor, self.grid.viewport().width() / 2)

    def zoom_y(self, step: int) -> None:
        self.geo.zoom_y(step, self.grid.viewport().height() / 2)

    def view_state(self) -> dict:
        """Zoom and scroll in musical units (kept with the project: reopening shows the same place)."""
        geo = self.geo
        return {"px_per_quarter": round(geo.px_per_quarter, 4), "row_height": geo.row_height,
                "left_quarter": round(geo.scroll_x / geo.px_per_quarter, 4),
                "top_row": round(geo.scroll_y / geo.row_height, 4)}

    def restore_view(self, state: dict | None) -> bool:
        """Apply a `view_state()`; False (nothing changed) when it is missing or not one."""
        if not isinstance(state, dict):
            return False
        try:
            ppq_px = float(state["px_per_quarter"])
            rows = float(state["row_height"])
            left, top = float(state["left_quarter"]), float(state["top_row"])
        except (KeyError, TypeError, ValueError, OverflowError):
            return False
        if not all(math.isfinite(v) for v in (ppq_px, rows, left, top)):  # e.g. 1e400 read as inf
            return False
        geo = self.geo
        geo.px_per_quarter = min(MAX_PX_PER_QUARTER, max(MIN_PX_PER_QUARTER, ppq_px))
        geo.row_height = int(min(MAX_ROW_HEIGHT, max(MIN_ROW_HEIGHT, rows)))
        geo.changed.emit()  # the scroll bars take the new content size first
        for bar, value in ((self.grid.horizontalScrollBar(), left * geo.px_per_quarter),
                           (self.grid.verticalScrollBar(), top * geo.row_height)):
            bar.setValue(round(min(max(0.0, value), float(bar.maximum()))))  # 1e300: the far end, no overflow
        return True

    def zoom_to_fit(self) -> None:
        notes = self.doc.notes
        if not notes:
            return
        width = max(100, self.grid.viewport().width() - 40)
        ticks = max(self.doc.clip.end_tick - notes[0].start, self.doc.ppq)
        self.geo.px_per_quarter = 1.0  # zoom_x clamps; set a base then scale to fit
        self.geo.zoom_x(width / (ticks / self.doc.ppq))
        self.grid._update_scrollbars()
        self.grid.center_on_notes()


class MidiDragHandle(QLabel):
    """Drag this onto a file manager or DAW to export the selection (or all notes) as a .mid."""

    def __init__(self, document: SketchDocument, name_fn, parent=None) -> None:
        super().__init__("⠿ Drag MIDI", parent)
        self.doc = document
        self._name_fn = name_fn
        self._press: QPoint | None = None
        self.setToolTip("Drag the selection (or the whole sketch) out as a MIDI file")
        self.setCursor(Qt.OpenHandCursor)
        self.setStyleSheet("padding: 2px 8px; border: 1px solid #555; border-radius: 3px;")

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.LeftButton:
            self._press = event.position().toPoint()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._press is None or (event.position().toPoint() - self._press).manhattanLength() < 6:
            return
        self._press = None
        notes = sorted(self.doc.selection) or list(self.doc.notes)
        if not notes:
            return
        drag = QDrag(self)
        drag.setMimeData(drag_mime(notes, self.doc.clip, self._name_fn()))
        drag.exec(Qt.CopyAction)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._press = None
