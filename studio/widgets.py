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
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)


# Widgets whose value the mouse wheel changes. Scroll bars are not among them: moving them is what the
# wheel is for.
VALUE_WIDGETS = (QAbstractSpinBox, QComboBox, QAbstractSlider)
# A QGraphicsView (a plot) under a panel set up by `guard_wheel` carries this property: the wheel over it
# scrolls the panel too, unless the plot has the focus.
WHEEL_NEEDS_FOCUS = "smartWheelNeedsFocus"


def _is_value_widget(w: QObject) -> bool:
    return isinstance(w, VALUE_WIDGETS) and not isinstance(w, QScrollBar)


def _guarded_widget(obj: QObject) -> QWidget | None:
    """The value widget (or guarded plot) a wheel event sent to `obj` would change, if any. The receiver is
    the deepest widget under the pointer: a spin box's line edit, a view's viewport."""
    w = obj if isinstance(obj, QWidget) else None
    while w is not None:
        if _is_value_widget(w):
            return w
        if isinstance(w, QGraphicsView) and w.property(WHEEL_NEEDS_FOCUS):
            return w
        if w.isWindow():
            return None
        w = w.parentWidget()
    return None


def _has_focus(w: QWidget) -> bool:
    focused = QApplication.focusWidget()
    return focused is not None and (focused is w or w.isAncestorOf(focused))


class _WheelGuard(QObject):
    """The mouse wheel changes a value widget only when that widget has the keyboard focus (as in DAWs'
    inspectors): over an unfocused one it scrolls the enclosing panel, or does nothing (a toolbar), so
    scrolling or a stray wheel never changes a setting, the tempo or the time signature by accident.
    Installed on the application, it holds for every window and dialog, including those made later."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind == QEvent.Polish:
            # Qt gives a WheelFocus widget the focus on the wheel (before any filter sees the event):
            # those widgets take the focus on click or Tab only.
            if _is_value_widget(obj) and obj.focusPolicy() == Qt.WheelFocus:
                obj.setFocusPolicy(Qt.StrongFocus)
            return False
        if kind != QEvent.Wheel:
            return False
        owner = _guarded_widget(obj)
        if owner is None or _has_focus(owner):
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
_installed_on: list[QApplication] = []


def install_wheel_guard() -> None:
    """Apply the wheel rule application-wide (once per QApplication); widgets that exist already get the
    focus policy now, later ones when they are polished."""
    app = QApplication.instance()
    if app is None or any(a is app for a in _installed_on):
        return
    app.installEventFilter(_GUARD)
    _installed_on.append(app)
    for w in app.allWidgets():
        if _is_value_widget(w) and w.focusPolicy() == Qt.WheelFocus:
            w.setFocusPolicy(Qt.StrongFocus)


def guard_wheel(root: QWidget) -> None:
    """Apply the wheel rule under `root`: value widgets (application-wide anyway) and the graphics views
    (plots) under it; a click or Tab still gives such a widget the focus, and then the wheel edits it."""
    install_wheel_guard()
    for cls in VALUE_WIDGETS:
        for w in root.findChildren(cls):
            if not isinstance(w, QScrollBar):
                w.setFocusPolicy(Qt.StrongFocus)
    for view in root.findChildren(QGraphicsView):
        view.setFocusPolicy(Qt.StrongFocus)
        view.setProperty(WHEEL_NEEDS_FOCUS, True)


def compact_combos(root: QWidget, chars: int = 12) -> None:
    """Combo boxes under `root` ask for `chars` characters of width, not their longest item: a long
    reward description must not widen (and so clip) a dock panel. The popup still shows whole items."""
    for combo in root.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(chars)
        combo.view().setTextElideMode(Qt.ElideNone)


class Collapsible(QWidget):
    """A titled section whose body folds away to one line (▸ title · summary), so that what matters now
    (e.g. the candidates after Continue) fits a 1366×768 screen without scrolling."""

    def __init__(self, title: str, body: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.body = body
        self.header = QToolButton(self)
        self.header.setCheckable(True)
        self.header.setChecked(True)
        self.header.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.header.setAutoRaise(True)
        self.header.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.header.setStyleSheet("QToolButton { text-align: left; font-weight: bold; border: none; }")
        self.header.toggled.connect(self._show_body)
        self._summary = ""
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(self.header)
        column.addWidget(body)
        self._show_body(True)

    def expanded(self) -> bool:
        return self.header.isChecked()

    def set_expanded(self, on: bool) -> None:
        self.header.setChecked(on)

    def set_summary(self, text: str) -> None:
        """What the folded section holds, shown on its header while folded."""
        self._summary = text
        self._update_header()

    def _show_body(self, on: bool) -> None:
        self.body.setVisible(on)
        self.header.setArrowType(Qt.DownArrow if on else Qt.RightArrow)
        self._update_header()

    def _update_header(self) -> None:
        folded = not self.header.isChecked()
        text = f"{self.title} · {self._summary}" if folded and self._summary else self.title
        self.header.setText(text)
        self.header.setToolTip(f"Show the {self.title.lower()}" if folded else f"Fold the {self.title.lower()} away")
