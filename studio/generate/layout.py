"""The Generate panel's layout: its widgets, created as attributes of the panel (like Qt Designer's
`setupUi`); what they do is wired up in `studio.generate.panel`. Sized to fit a 1366×768 screen at the
default dock width: rows wrap instead of widening the dock."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableView,
    QTabWidget,
    QTreeWidget,
    QVBoxLayout,
    QWidget,
)

from engine.api import MAX_CANDIDATES
from engine.maa_weights import AXES
from studio.generate.candidates import (
    STATE_COLUMN,
    TASTE,
    TASTE_COLUMN,
    ScoreBarDelegate,
    SwatchDelegate,
    TasteBarDelegate,
)
from studio.generate.maa import MaaNotice
from studio.generate.options import NOTE_NAMES, PANEL_MAX_BARS, SCALES, pitch_name
from studio.generate.placement import MODES
from studio.generate.taste import TasteSection
from studio.theme import STYLE_DIM, STYLE_WARN
from studio.widgets import Collapsible


class PitchSpin(QSpinBox):
    """A MIDI pitch shown as a note name (C4 = 60)."""

    def textFromValue(self, value: int) -> str:
        return pitch_name(value)

    def valueFromText(self, text: str) -> int:
        text = text.strip().replace("#", "♯").replace("b", "♭")
        for p in range(self.minimum(), self.maximum() + 1):
            if pitch_name(p).lower() == text.lower():
                return p
        try:
            return int(text)
        except ValueError:
            return self.value()

    def validate(self, text, pos):
        return QValidator.Acceptable, text, pos


def _row(*widgets, stretch_last: bool = False) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(QLabel(w) if isinstance(w, str) else w)
    if stretch_last:
        row.addStretch(1)
    return row


def setup_ui(panel) -> None:
    """Create the panel's widgets as attributes of `panel` (as Qt Designer's setupUi does)."""
    tabs = QTabWidget(panel)
    panel.tabs = tabs
    page = QWidget()
    col = QVBoxLayout(page)
    col.setContentsMargins(6, 6, 6, 6)
    col.setSpacing(6)
    col.addLayout(_build_host_row(panel))
    panel.host_progress = QProgressBar()  # the local host starting: what it is doing
    panel.host_progress.setRange(0, 0)
    panel.host_progress.setMaximumHeight(12)
    panel.host_progress.setTextVisible(False)
    panel.host_progress.hide()
    col.addWidget(panel.host_progress)
    panel.maa = MaaNotice(panel.downloads)  # where the eye is: right under the host line
    col.addWidget(panel.maa)
    # Folded once candidates arrive (panel._start): the candidates and their actions then fit 1366×768.
    panel.settings_section = Collapsible("Settings", _build_settings_box(panel))
    col.addWidget(panel.settings_section)
    col.addLayout(_build_generate_row(panel))
    panel.progress = QProgressBar()
    panel.progress.setTextVisible(True)
    panel.progress.setMaximumHeight(16)
    panel.progress.hide()
    col.addWidget(panel.progress)
    panel.job_label = QLabel("")
    panel.job_label.setWordWrap(True)
    panel.job_label.setStyleSheet(STYLE_DIM)
    col.addWidget(panel.job_label)
    col.addWidget(_build_candidates_box(panel), 1)
    col.addWidget(_build_search_box(panel))
    panel.taste_section = TasteSection(panel.taste_store)
    col.addWidget(panel.taste_section)
    col.addWidget(_build_sketch_box(panel))

    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setWidget(page)
    scroll.setFrameShape(QScrollArea.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # the page wraps to the dock's width
    tabs.addTab(scroll, "Generate")
    tabs.addTab(_build_history_tab(panel), "History")
    panel.setWidget(tabs)
    panel.setMinimumWidth(380)


def _build_host_row(panel) -> QHBoxLayout:
    panel.host_label = QLabel("")
    panel.host_label.setWordWrap(True)
    panel.host_label.setObjectName("hostLabel")
    panel.btn_connect = QPushButton("Connect")
    panel.btn_connect.setToolTip("Start the local host / connect to the remote host")
    panel.btn_host = QPushButton("Host…")
    panel.btn_host.setToolTip("Local or remote host, model folder, URL and token")
    row = QHBoxLayout()
    row.addWidget(panel.host_label, 1)
    row.addWidget(panel.btn_connect)
    row.addWidget(panel.btn_host)
    return row


def _build_settings_box(panel) -> QGroupBox:
    box = QGroupBox()  # its title is the Collapsible's header
    form = QFormLayout(box)
    form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
    panel.spin_candidates = QSpinBox()
    panel.spin_candidates.setRange(1, MAX_CANDIDATES)
    panel.spin_candidates.setToolTip(f"How many alternatives to generate at once (1–{MAX_CANDIDATES})")
    panel.spin_bars = QSpinBox()
    panel.spin_bars.setRange(1, PANEL_MAX_BARS)
    panel.spin_bars.setSuffix(" bars")
    panel.spin_bars.setToolTip("Length of a continuation (regenerate: the selected bars)")
    form.addRow("Candidates", _row(panel.spin_candidates, "Length", panel.spin_bars))
    panel.combo_placement = QComboBox()
    for mode, label in MODES.items():
        panel.combo_placement.addItem(label, mode)
    panel.combo_placement.setToolTip(
        "What a continuation does to the music after the continuation point. Insert: that music moves "
        "later by the new bars. Replace: the new bars overwrite it. Empty space only: continue only where "
        "nothing is written yet. The music before the point is what the model continues.")
    form.addRow("Music after", panel.combo_placement)
    panel.spin_temperature = QDoubleSpinBox()
    panel.spin_temperature.setRange(0.05, 2.0)
    panel.spin_temperature.setSingleStep(0.05)
    panel.spin_temperature.setToolTip("Higher: more adventurous, lower: safer")
    panel.spin_top_p = QDoubleSpinBox()
    panel.spin_top_p.setRange(0.05, 1.0)
    panel.spin_top_p.setSingleStep(0.05)
    panel.spin_top_p.setToolTip("Nucleus sampling: only the most likely tokens that add up to this probability")
    form.addRow("Temperature", _row(panel.spin_temperature, "Top-p", panel.spin_top_p))
    panel.chk_key = QCheckBox("Lock")
    panel.chk_key.setToolTip("Only notes of this key/scale")
    panel.combo_root = QComboBox()
    panel.combo_root.addItems(list(NOTE_NAMES))
    panel.combo_scale = QComboBox()
    panel.combo_scale.addItems(list(SCALES))
    form.addRow("Key", _row(panel.chk_key, panel.combo_root, panel.combo_scale))
    panel.spin_low, panel.spin_high = PitchSpin(), PitchSpin()
    for spin in (panel.spin_low, panel.spin_high):
        spin.setRange(21, 108)
        spin.setToolTip("Pitch range the model may use")
    form.addRow("Range", _row(panel.spin_low, "to", panel.spin_high))
    panel.spin_seed = QSpinBox()
    panel.spin_seed.setRange(0, 2**31 - 1)
    panel.spin_seed.setSpecialValueText("random")
    panel.spin_seed.setToolTip("The same seed and settings give the same candidates (random: new each time)")
    panel.chk_score = QCheckBox("Score with MAA")
    panel.chk_score.setToolTip("Render and score each candidate (CE/CU/PC/PQ) as soon as it is complete")
    row = _row(panel.spin_seed, panel.chk_score)
    row.setStretch(0, 1)
    form.addRow("Seed", row)
    return box


def _build_generate_row(panel) -> QGridLayout:
    panel.btn_continue = QPushButton("▶ Continue")
    panel.btn_continue.setToolTip("Continue the music from the bar line after the selection, or from the "
                                  "playhead (Ctrl+G)")
    panel.btn_regen = QPushButton("⟳ Regenerate selection")
    panel.btn_regen.setToolTip("Rewrite the bars of the selected notes, keeping what comes before and after "
                               "(Ctrl+Shift+G)")
    panel.btn_stop = QPushButton("■ Stop")
    grid = QGridLayout()
    grid.addWidget(panel.btn_continue, 0, 0)
    grid.addWidget(panel.btn_regen, 0, 1)
    grid.addWidget(panel.btn_stop, 0, 2)
    grid.setColumnStretch(0, 1)
    grid.setColumnStretch(1, 1)
    return grid


def _build_candidates_box(panel) -> QGroupBox:
    box = QGroupBox("Candidates")
    inner = QVBoxLayout(box)
    panel.random_warning = QLabel("⚠ MAA has random weights: these scores are for tests only, not real ratings")
    panel.random_warning.setWordWrap(True)
    panel.random_warning.setStyleSheet(STYLE_WARN + " font-weight: bold;")
    panel.random_warning.hide()
    inner.addWidget(panel.random_warning)
    panel.combo_sort = QComboBox()
    panel.combo_sort.addItems(["order", *AXES, TASTE])
    panel.combo_sort.setToolTip("Sort the candidates by an MAA axis or by your taste (highest first)")
    inner.addLayout(_row("Best of N by", panel.combo_sort, stretch_last=True))
    panel.table = QTableView()
    panel.table.setModel(panel.proxy)
    panel.table.setSelectionBehavior(QAbstractItemView.SelectRows)
    panel.table.setSelectionMode(QAbstractItemView.SingleSelection)
    panel.table.setSortingEnabled(True)
    panel.table.sortByColumn(0, Qt.AscendingOrder)
    panel.table.verticalHeader().hide()
    panel.table.verticalHeader().setDefaultSectionSize(22)
    panel.table.setItemDelegateForColumn(0, SwatchDelegate(panel.table))
    bars = ScoreBarDelegate(panel.table)
    for c in range(2, TASTE_COLUMN):
        panel.table.setItemDelegateForColumn(c, bars)
    panel.table.setItemDelegateForColumn(TASTE_COLUMN, TasteBarDelegate(panel.table))
    header = panel.table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.Stretch)
    header.setSectionResizeMode(0, QHeaderView.Fixed)
    header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
    header.setSectionResizeMode(STATE_COLUMN, QHeaderView.ResizeToContents)
    header.setSectionResizeMode(TASTE_COLUMN, QHeaderView.Fixed)
    header.resizeSection(0, 60)  # swatch, label and the drag grip (dragout)
    header.resizeSection(TASTE_COLUMN, 92)  # "+1.2±0.8" and its bar
    panel.table.setMinimumHeight(110)
    # The actions for the selected candidate sit right above the list, so that they are on screen whenever
    # the list is (1366×768 with the settings folded), not below a table that pushes them off the panel.
    panel.btn_solo = QPushButton("▶ Solo")
    panel.btn_solo.setToolTip("Hear the candidate alone")
    panel.btn_context = QPushButton("▶ In context")
    panel.btn_context.setToolTip("Hear the sketch with the candidate placed as Accept would, from a bar before it "
                                 "(double-click a row)")
    panel.btn_ab = QPushButton("A/B")
    panel.btn_ab.setToolTip("Switch between the last two candidates you picked, keeping the position "
                            "(Ctrl+Shift+B)")
    panel.btn_accept = QPushButton("✓ Accept")
    panel.btn_accept.setToolTip("Put the candidate into the sketch as 'Music after' says (one undo step; "
                                "Ctrl+Return)")
    panel.btn_discard = QPushButton("✗ Discard")
    panel.btn_discard.setToolTip("Remove this candidate from the list and the roll")
    panel.btn_clear = QPushButton("Clear")
    panel.btn_clear.setToolTip("Remove all candidates from the roll")
    inner.addLayout(_row(panel.btn_solo, panel.btn_context, panel.btn_ab))
    inner.addLayout(_row(panel.btn_accept, panel.btn_discard, panel.btn_clear))
    panel.compare_label = QLabel("Compare: pick two")
    panel.compare_label.setStyleSheet(STYLE_DIM)
    panel.btn_prefer_a = QPushButton("A better")
    panel.btn_prefer_b = QPushButton("B better")
    panel.btn_prefer_tie = QPushButton("Same")
    for b in (panel.btn_prefer_a, panel.btn_prefer_b, panel.btn_prefer_tie):
        b.setToolTip("Compare A/B: A is the earlier of the last two candidates you picked, B the later. "
                     "Your choice is saved as a pick for your taste")
    inner.addLayout(_row(panel.compare_label, panel.btn_prefer_a, panel.btn_prefer_b, panel.btn_prefer_tie))
    # What Compare does, said where it is (it was in a tooltip only): shown until a pair is picked.
    panel.compare_hint = QLabel("Compare: click two candidates (A, then B), hear them, say which is better; "
                                "each answer teaches the studio your taste.")
    panel.compare_hint.setWordWrap(True)
    panel.compare_hint.setStyleSheet(STYLE_DIM)
    inner.addWidget(panel.compare_hint)
    inner.addWidget(panel.table, 1)
    return box


def _build_search_box(panel) -> QGroupBox:
    box = QGroupBox("Reward-guided search")
    form = QFormLayout(box)
    panel.combo_reward = QComboBox()
    panel.combo_reward.setToolTip("What the search maximises. MAA axes need MAA weights on the host; "
                                  "the offline rewards use the symbolic features")
    panel.spin_beams = QSpinBox()
    panel.spin_beams.setRange(1, 8)
    panel.spin_beams.setToolTip("Beams kept after every bar (K)")
    panel.spin_expand = QSpinBox()
    panel.spin_expand.setRange(1, 8)
    panel.spin_expand.setToolTip("One-bar continuations tried per beam and bar")
    form.addRow("Reward", panel.combo_reward)
    form.addRow("Beams", _row(panel.spin_beams, "tries/beam", panel.spin_expand))
    panel.spin_budget = QDoubleSpinBox()
    panel.spin_budget.setRange(1, 600)
    panel.spin_budget.setSuffix(" s")
    panel.spin_budget.setDecimals(0)
    panel.spin_budget.setToolTip("Time budget: the search returns its best beams when it runs out")
    panel.btn_search = QPushButton("⚲ Search")
    panel.btn_search.setToolTip("Grow the beams one bar at a time from the continuation point, keeping the best")
    row = _row(panel.spin_budget, panel.btn_search)
    row.setStretch(0, 1)
    row.setStretch(1, 1)
    form.addRow("Budget", row)
    return box


def _build_sketch_box(panel) -> QGroupBox:
    box = QGroupBox("The sketch's MAA scores")
    row = QHBoxLayout(box)
    panel.sketch_label = QLabel("")
    panel.sketch_label.setWordWrap(True)
    panel.combo_strip = QComboBox()
    panel.combo_strip.addItems(list(AXES))
    panel.combo_strip.setToolTip("Axis shown per 10-s window on the roll")
    row.addWidget(panel.sketch_label, 1)
    row.addWidget(QLabel("Strip"))
    row.addWidget(panel.combo_strip)
    return box


def _build_history_tab(panel) -> QWidget:
    hist = QWidget()
    hl = QVBoxLayout(hist)
    hl.setContentsMargins(4, 4, 4, 4)
    panel.history_tree = QTreeWidget()
    panel.history_tree.setHeaderLabels(["When", "Mode", "Settings", "Model", "Result"])
    panel.history_tree.setRootIsDecorated(False)
    panel.history_tree.setAlternatingRowColors(True)
    hl.addWidget(panel.history_tree)
    tip = QLabel("Every request with its settings, model and scores is saved with the project. "
                 "Double-click to show its remaining candidates again.")
    tip.setWordWrap(True)
    tip.setStyleSheet(STYLE_DIM)
    hl.addWidget(tip)
    return hist
