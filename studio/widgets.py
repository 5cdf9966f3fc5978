"""Small widget behaviours shared by the panels."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QGraphicsView,
    QScrollBar,
    QWidget,
)


class _WheelGuard(QObject):
    """The mouse wheel over a value widget scrolls the panel unless that widget has the keyboard focus
    (as in DAWs' inspectors): scrolling through a panel never changes a setting by accident."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() != QEvent.Wheel:
            return False
        owner = obj.parent() if isinstance(obj.parent(), QGraphicsView) else obj  # a view's viewport
        if owner.hasFocus():
            return False
        area = owner.parentWidget()
        while area is not None and not isinstance(area, QAbstractScrollArea):
            area = area.parentWidget()
        if area is None:
            event.ignore()
            return True
        # Scroll the enclosing panel (sent on, not propagated: Qt propagates only window-system events).
        bar = area.horizontalScrollBar() if event.modifiers() & Qt.ShiftModifier else area.verticalScrollBar()
        QApplication.sendEvent(bar, event.clone())
        return True


_GUARD = _WheelGuard()


def guard_wheel(root: QWidget) -> None:
    """Apply the wheel rule to every spin box, combo box, slider and graphics view (plots) under `root`;
    a click or Tab still gives such a widget the focus, and then the wheel edits it."""
    for cls in (QAbstractSpinBox, QComboBox, QAbstractSlider):
        for w in root.findChildren(cls):
            if isinstance(w, QScrollBar):  # scroll bars are what the wheel should move
                continue
            w.setFocusPolicy(Qt.StrongFocus)
            w.installEventFilter(_GUARD)
    for view in root.findChildren(QGraphicsView):
        view.setFocusPolicy(Qt.StrongFocus)
        view.viewport().installEventFilter(_GUARD)


def compact_combos(root: QWidget, chars: int = 12) -> None:
    """Combo boxes under `root` ask for `chars` characters of width, not their longest item: a long
    reward description must not widen (and so clip) a dock panel. The popup still shows whole items."""
    for combo in root.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(chars)
        combo.view().setTextElideMode(Qt.ElideNone)
