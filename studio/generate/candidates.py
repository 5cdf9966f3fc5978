"""Candidates of the Generate panel on screen: their colours, the table model (sortable by any MAA
axis or by the musician's taste: best-of-N) and the delegates that draw CE/CU/PC/PQ score bars and the
taste score. The candidates themselves are `studio.generate.history.Candidate` (no Qt)."""

from __future__ import annotations

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QRectF,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QStyle, QStyledItemDelegate

from engine.maa_weights import AXES
from studio import theme
from studio.generate.history import READY, STREAMING, Candidate

AXIS_NAMES = {"CE": "content enjoyment", "CU": "content usefulness", "PC": "production complexity",
              "PQ": "production quality"}
# 16 distinct hues (one per candidate), bright enough on the dark roll.
PALETTE = [QColor.fromHsv(h, 170, 255) for h in
           (190, 30, 120, 300, 55, 255, 350, 160, 85, 220, 15, 270, 140, 330, 100, 240)]
RANDOM_SCORE_COLOUR = QColor(0x9A, 0x8C, 0x6A)
SCORE_MIN, SCORE_MAX = 1.0, 10.0
TASTE = "Taste"  # the column (and sort key) of the musician's taste score
TASTE_SPAN = 3.0  # a taste bar is full at ±3 (log-odds: e³ ≈ 20:1 against a typical candidate)
TASTE_COLUMN = 2 + len(AXES)
STATE_COLUMN = TASTE_COLUMN + 1


def candidate_colour(index: int) -> QColor:
    return QColor(PALETTE[index % len(PALETTE)])


def score_colour(value: float) -> QColor:
    """1 → red, 5.5 → amber, 10 → green."""
    t = max(0.0, min(1.0, (value - SCORE_MIN) / (SCORE_MAX - SCORE_MIN)))
    return QColor.fromHsv(int(0 + 120 * t), 170, 220)


def candidate_tooltip(item: Candidate, taste: tuple[float, float] | None = None) -> str:
    lines = [f"<b>Candidate {item.label}</b> — {len(item.notes)} notes, {item.status}",
             "<i>Drag the ⠿ grip out to a DAW or file manager: a .mid that keeps its place on the bar grid</i>"]
    if item.finished_by:
        lines.append(f"ended by: {item.finished_by}")
    if item.reward is not None:
        lines.append(f"search reward: {item.reward:.3f}")
    if taste is not None:
        lines.append(f"your taste: {taste[0]:+.2f} ± {taste[1]:.2f} (log-odds against a typical candidate)")
    if item.scores:
        tag = " <i>(random weights — test only)</i>" if item.random_weights else ""
        lines.append("MAA" + tag + ": " + ", ".join(f"{a} {item.scores[a]:.2f}" for a in AXES if a in item.scores))
    elif item.scores_error:
        lines.append(f"no MAA scores: {item.scores_error}")
    if item.features:
        f = item.features
        lines.append("<br><b>Features</b> (paper §4.2)")
        for key, fmt in (("n_notes", "{:d}"), ("polyphony_rate", "{:.2f}"), ("empty_beat_rate", "{:.2f}"),
                         ("pitch_range", "{:d}"), ("scale_consistency", "{:.2f}"), ("velocity_range", "{:d}")):
            if key in f:
                try:
                    lines.append(f"{key.replace('_', ' ')}: {fmt.format(f[key])}")
                except (ValueError, TypeError):
                    lines.append(f"{key.replace('_', ' ')}: {f[key]}")
    return "<br>".join(lines)


SORT_ROLE = Qt.UserRole + 1
SCORE_ROLE = Qt.UserRole + 2  # (value or None, random_weights)
COLOUR_ROLE = Qt.UserRole + 3


class CandidateTableModel(QAbstractTableModel):
    COLUMNS = ("", "Notes", *AXES, TASTE, "State")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.items: list[Candidate] = []
        self.show_scores = True  # False while no real (or labelled random) MAA is available
        self.taste: dict[int, tuple[float, float]] = {}  # Candidate.uid -> (taste, std), from a ready model only

    # ------------------------------------------------------------------ edits
    def set_items(self, items: list[Candidate]) -> None:
        self.beginResetModel()
        self.items = list(items)
        self.endResetModel()

    def add(self, item: Candidate) -> None:
        self.beginInsertRows(QModelIndex(), len(self.items), len(self.items))
        self.items.append(item)
        self.endInsertRows()

    def item_changed(self, item: Candidate) -> None:
        try:
            row = self.items.index(item)
        except ValueError:
            return
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.COLUMNS) - 1))

    def set_show_scores(self, show: bool) -> None:
        if show != self.show_scores:
            self.show_scores = show
            if self.items:
                self.dataChanged.emit(self.index(0, 2), self.index(len(self.items) - 1, 5))

    def set_taste(self, taste: dict[int, tuple[float, float]]) -> None:
        """Taste scores by candidate uid (empty: no ready taste model)."""
        self.taste = dict(taste)
        if self.items:
            self.dataChanged.emit(self.index(0, TASTE_COLUMN), self.index(len(self.items) - 1, TASTE_COLUMN))

    def remove(self, item: Candidate) -> None:
        try:
            row = self.items.index(item)
        except ValueError:
            return
        self.beginRemoveRows(QModelIndex(), row, row)
        del self.items[row]
        self.endRemoveRows()

    # ------------------------------------------------------------------ Qt model
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.items)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return self.COLUMNS[section]
        if orientation == Qt.Horizontal and role == Qt.ToolTipRole and 2 <= section <= 5:
            axis = AXES[section - 2]
            return f"MAA {axis}: {AXIS_NAMES[axis]} (1–10). Click to sort: best-of-N."
        if orientation == Qt.Horizontal and role == Qt.ToolTipRole and section == TASTE_COLUMN:
            return ("Your taste, learnt from your picks (± its uncertainty); shown once the model is ready. "
                    "Click to sort: best-of-N.")
        return None

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid() or index.row() >= len(self.items):
            return None
        item, col = self.items[index.row()], index.column()
        if role == Qt.ToolTipRole:
            return candidate_tooltip(item, self.taste.get(item.uid))
        if col == 0:
            if role == Qt.DisplayRole:
                return item.label
            if role == COLOUR_ROLE or role == Qt.DecorationRole:
                return candidate_colour(item.index)
            if role == SORT_ROLE:
                return item.uid
            return None
        if col == 1:
            if role == Qt.DisplayRole:
                return str(len(item.notes))
            if role == SORT_ROLE:
                return len(item.notes)
            return None
        if 2 <= col <= 5:
            axis = AXES[col - 2]
            value = item.scores.get(axis) if (item.scores and self.show_scores) else None
            if role == SCORE_ROLE:
                return (value, item.random_weights, item.status == STREAMING)
            if role == SORT_ROLE:
                return -1e9 if value is None else float(value)
            if role == Qt.DisplayRole:
                return "" if value is None else f"{value:.2f}"
            return None
        if col == TASTE_COLUMN:
            taste = self.taste.get(item.uid)
            if role == SCORE_ROLE:
                return (taste, item.status == STREAMING)
            if role == SORT_ROLE:
                return -1e9 if taste is None else float(taste[0])
            if role == Qt.DisplayRole:
                return "" if taste is None else f"{taste[0]:+.2f} ± {taste[1]:.2f}"
            return None
        if col == STATE_COLUMN:
            if role == Qt.DisplayRole:
                state = {STREAMING: "streaming…", READY: "ready"}.get(item.status, item.status)
                if item.reward is not None and item.status == READY:
                    state = f"reward {item.reward:.2f}"
                return state
            if role == SORT_ROLE:
                return item.status
            if role == Qt.ForegroundRole:
                return {"accepted": QColor("#9fe0a0"), "discarded": theme.TEXT_DIM,
                        "streaming": QColor("#ffd040")}.get(item.status, theme.TEXT)
        return None


class CandidateSortProxy(QSortFilterProxyModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)


class ScoreBarDelegate(QStyledItemDelegate):
    """A horizontal bar (1–10) with the value; hatched amber for random-weight scores."""

    def paint(self, p: QPainter, option, index) -> None:
        value, random_weights, streaming = index.data(SCORE_ROLE) or (None, False, False)
        p.save()
        if option.state & QStyle.State_Selected:
            p.fillRect(option.rect, option.palette.highlight().color().darker(160))
        r = QRectF(option.rect).adjusted(3, 4, -3, -4)
        p.fillRect(r, QColor(0x1A, 0x1C, 0x20))
        if value is None:
            p.setPen(theme.TEXT_DIM)
            p.drawText(r, Qt.AlignCenter, "…" if streaming else "—")
        else:
            frac = max(0.0, min(1.0, (value - SCORE_MIN) / (SCORE_MAX - SCORE_MIN)))
            bar = QRectF(r.left(), r.top(), r.width() * frac, r.height())
            colour = RANDOM_SCORE_COLOUR if random_weights else score_colour(value)
            p.fillRect(bar, colour)
            if random_weights:
                p.fillRect(bar, QColor(0, 0, 0, 60))
                p.setBrush(Qt.BDiagPattern)
                p.fillRect(bar, Qt.BDiagPattern)
            p.setPen(QColor(0xF4, 0xF4, 0xF4))
            p.drawText(r.adjusted(0, 0, -2, 0), Qt.AlignRight | Qt.AlignVCenter, f"{value:.1f}")
        p.restore()


class TasteBarDelegate(QStyledItemDelegate):
    """A bar from the middle (0 = a typical candidate) towards + (more to your taste) or −, its ± std as a
    whisker, and the value."""

    def paint(self, p: QPainter, option, index) -> None:
        taste, streaming = index.data(SCORE_ROLE) or (None, False)
        p.save()
        if option.state & QStyle.State_Selected:
            p.fillRect(option.rect, option.palette.highlight().color().darker(160))
        r = QRectF(option.rect).adjusted(3, 4, -3, -4)
        p.fillRect(r, QColor(0x1A, 0x1C, 0x20))
        mid = r.center().x()
        p.setPen(QColor(0x60, 0x64, 0x6C))
        p.drawLine(int(mid), int(r.top()), int(mid), int(r.bottom()))
        if taste is None:
            p.setPen(theme.TEXT_DIM)
            p.drawText(r, Qt.AlignCenter, "…" if streaming else "—")
        else:
            value, std = taste
            half = r.width() / 2

            def x(v: float) -> float:
                return mid + half * max(-1.0, min(1.0, v / TASTE_SPAN))

            colour = QColor.fromHsv(195, 150, 225, 120) if value >= 0 else QColor.fromHsv(25, 150, 215, 120)
            p.fillRect(QRectF(min(mid, x(value)), r.top(), abs(x(value) - mid), r.height()), colour)
            p.setPen(QColor(0xF4, 0xF4, 0xF4, 200))  # the ± std as a whisker along the bottom edge
            y = r.bottom() - 1
            p.drawLine(int(x(value - std)), int(y), int(x(value + std)), int(y))
            p.setPen(QColor(0xF4, 0xF4, 0xF4))
            p.drawText(r, Qt.AlignCenter, f"{value:+.1f} ±{std:.1f}")
        p.restore()


class SwatchDelegate(QStyledItemDelegate):
    """The candidate's ghost colour next to its label, and at the right its drag grip (dragout.GRIP_WIDTH px:
    drag it out for a .mid of the candidate)."""

    GRIP = 14

    def paint(self, p: QPainter, option, index) -> None:
        p.save()
        if option.state & QStyle.State_Selected:
            p.fillRect(option.rect, option.palette.highlight())
        colour = index.data(COLOUR_ROLE) or QColor(Qt.gray)
        r = option.rect
        sw = QRectF(r.left() + 4, r.top() + 5, 12, r.height() - 10)
        p.fillRect(sw, colour)
        p.setPen(theme.TEXT)
        p.drawText(QRectF(r.left() + 20, r.top(), r.width() - 20 - self.GRIP, r.height()),
                   Qt.AlignVCenter | Qt.AlignLeft, index.data(Qt.DisplayRole) or "")
        # The grip: two columns of three dots, as on the sketch's "⠿ Drag MIDI" handle.
        p.setRenderHint(QPainter.Antialiasing)
        p.setPen(Qt.NoPen)
        p.setBrush(QColor(0xB8, 0xBC, 0xC4))
        x0 = r.right() - self.GRIP + 4
        y0 = r.center().y() - 5
        for col in range(2):
            for row in range(3):
                p.drawEllipse(QRectF(x0 + col * 5, y0 + row * 4.5, 2.6, 2.6))
        p.restore()
