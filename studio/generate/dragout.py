"""Drag any candidate out of the candidate list: the grip at the right of its first cell gives a .mid of
that candidate that keeps its place on the bar grid (the leading rest to its bar, tempo and metre:
`studio.editor.clipboard.bar_aligned_clip`), as a file URL + plain path, MIDI bytes and the studio's own
notes — the same mime data as the whole-sketch drag handle, files in a folder that lives as long as the app.
The file's name says the bar it starts at, where to drop it in the DAW."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPoint, QRect, Qt
from PySide6.QtGui import QDrag
from PySide6.QtWidgets import QApplication, QTableView

from engine.music import Clip
from studio.editor.clipboard import drag_mime
from studio.generate.candidates import SwatchDelegate

GRIP_WIDTH = SwatchDelegate.GRIP  # px at the right of column 0, where the delegate draws the grip


def candidate_file_name(candidate, clip: Clip) -> str:
    first = min(n.start for n in candidate.notes)
    return f"candidate {candidate.label.lstrip('#')} from bar {clip.bar_index_at(first) + 1}"


def candidate_drag_mime(candidate, clip: Clip):
    """The mime data a candidate's drag carries (None for a candidate without notes)."""
    if not candidate.notes:
        return None
    return drag_mime(list(candidate.notes), clip, candidate_file_name(candidate, clip))


def grip_rect(cell: QRect) -> QRect:
    return QRect(cell.right() - GRIP_WIDTH + 1, cell.top(), GRIP_WIDTH, cell.height())


class CandidateDragHandles(QObject):
    """Watches the candidate table's viewport: a press on a row's grip and a move start the drag."""

    def __init__(self, table: QTableView, model, proxy, document, parent: QObject | None = None) -> None:
        super().__init__(parent or table)
        self.table, self.model, self.proxy, self.doc = table, model, proxy, document
        self._press: tuple[QPoint, object] | None = None
        table.viewport().setMouseTracking(True)
        table.viewport().installEventFilter(self)

    def candidate_at(self, pos: QPoint):
        """The candidate whose grip is under `pos` (viewport coordinates), or None."""
        index = self.table.indexAt(pos)
        if not index.isValid() or index.column() != 0:
            return None
        if not grip_rect(self.table.visualRect(index)).contains(pos):
            return None
        row = self.proxy.mapToSource(index).row()
        return self.model.items[row] if 0 <= row < len(self.model.items) else None

    def eventFilter(self, obj, event) -> bool:
        kind = event.type()
        if kind == QEvent.MouseButtonPress and event.button() == Qt.LeftButton:
            pos = event.position().toPoint()
            item = self.candidate_at(pos)
            self._press = (pos, item) if item is not None else None
            return False  # the row is selected as by any click
        if kind == QEvent.MouseMove:
            pos = event.position().toPoint()
            if self._press is None:
                over = self.candidate_at(pos) is not None
                self.table.viewport().setCursor(Qt.OpenHandCursor if over else Qt.ArrowCursor)
                return False
            if (pos - self._press[0]).manhattanLength() >= QApplication.startDragDistance():
                item = self._press[1]
                self._press = None
                self.start_drag(item)
            return True  # no rubber-band selection while the grip is held
        if kind == QEvent.MouseButtonRelease:
            self._press = None
        return False

    def start_drag(self, item) -> bool:
        mime = candidate_drag_mime(item, self.doc.clip)
        if mime is None:
            return False
        drag = QDrag(self.table)
        drag.setMimeData(mime)
        drag.exec(Qt.CopyAction)
        return True
