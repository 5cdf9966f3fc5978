"""The Generate panel (a dock): continue / regenerate selection / reward-guided search through the policy
host, candidates streaming in as ghost notes, audition solo / in context / A-B, accept (one undo step)
or discard, live MAA score bars (sortable: best-of-N), the sketch's own MAA strip, MAA weights
download / local file, and the generation history kept with the project."""

from __future__ import annotations

import base64
import datetime
import logging
import uuid
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableView,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.music import Clip, Note, dedupe_notes
from studio.editor.ghosts import GhostOverlay
from studio.generate.audition import CONTEXT, SOLO, Audition
from studio.generate.candidates import (
    AXES,
    CandidateItem,
    CandidateSortProxy,
    CandidateTableModel,
    ScoreBarDelegate,
    SwatchDelegate,
)
from studio.generate.hostconn import LOCAL, REMOTE, HostConnection
from studio.generate.jobs import (
    GenerationJob,
    MaaDownloadJob,
    SearchJob,
    SketchScoreJob,
)
from studio.generate.options import (
    MAX_BARS,
    MAX_CANDIDATES,
    NOTE_NAMES,
    SCALES,
    GenerateOptions,
    pitch_name,
)
from studio.generate.scorestrip import ScoreStrip
from studio.generate.search import MAA_REWARDS, OFFLINE_REWARDS, reward_label

log = logging.getLogger(__name__)

RESCORE_DEBOUNCE_MS = 1500
MAX_PROJECT_CANDIDATES = 400
MAX_PROJECT_HISTORY = 500
WARN = "color: #ffb060;"
OK = "color: #9fe0a0;"
DIM = "color: #9095a0;"


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
        from PySide6.QtGui import QValidator

        return QValidator.Acceptable, text, pos


class GeneratePanel(QDockWidget):
    status = Signal(str)  # one-line messages for the status bar

    def __init__(self, window) -> None:
        super().__init__("Generate", window)
        self.setObjectName("generatePanel")
        self.win = window
        self.doc = window.document
        self.settings = window.settings
        self.options = GenerateOptions.load(self.settings)
        self.host = HostConnection(self)
        self._load_host_settings()
        self.ghosts = GhostOverlay(window.editor.grid)
        self.strip = ScoreStrip(window.editor.grid)
        self.audition = Audition(window.transport, window.document, self)
        self.model = CandidateTableModel(self)
        self.proxy = CandidateSortProxy(self)
        self.proxy.setSourceModel(self.model)
        self._job = None  # the GenerationJob / SearchJob running
        self._jobs: set = set()  # every job alive (kept referenced until its thread ends)
        self._score_job: SketchScoreJob | None = None
        self._download_job: MaaDownloadJob | None = None
        self._download_error: str | None = None
        self._pending = None  # action to run once the host is connected
        self._request: dict | None = None  # the history entry of the running request
        self._by_index: dict[int, CandidateItem] = {}  # candidate index -> item, for the running request
        self._ab: list[CandidateItem] = []
        self._clip_serial = 0
        self._scored_serial = -1
        self._project = None
        self.sketch_scores: dict | None = None
        self.last_latency_ms: float | None = None
        self._click_time: float | None = None
        self._rescore_timer = QTimer(self)
        self._rescore_timer.setSingleShot(True)
        self._rescore_timer.setInterval(RESCORE_DEBOUNCE_MS)
        self._rescore_timer.timeout.connect(self.rescore_sketch)
        self._adopt_timer = QTimer(self)  # owned: it dies with the panel, never firing into a dead one
        self._adopt_timer.setSingleShot(True)
        self._adopt_timer.setInterval(0)
        self._adopt_timer.timeout.connect(self._adopt_project)

        self._build_ui()
        self._make_actions()
        self._apply_options_to_ui()
        self.host.changed.connect(self._on_host_changed)
        self.doc.clip_changed.connect(self._on_clip_changed)
        self.doc.selection_changed.connect(self._sync_buttons)
        self.audition.changed.connect(self._sync_buttons)
        self.status.connect(window.show_message)
        self._on_host_changed()
        self._adopt_project()

    # ================================================================== settings
    def _load_host_settings(self) -> None:
        s = self.settings
        self.host.configure(str(s.value("generate/hostMode", LOCAL)),
                            model_dir=str(s.value("generate/modelDir", "") or "") or None,
                            maa_path=str(s.value("generate/maaPath", "") or "") or None,
                            url=str(s.value("generate/remoteUrl", "") or ""),
                            token=str(s.value("generate/remoteToken", "") or ""))

    def _save_host_settings(self) -> None:
        s = self.settings
        s.setValue("generate/hostMode", self.host.mode)
        s.setValue("generate/modelDir", self.host.model_dir or "")
        s.setValue("generate/maaPath", self.host.maa_path or "")
        s.setValue("generate/remoteUrl", self.host.url)
        s.setValue("generate/remoteToken", self.host.token)

    # ================================================================== UI
    def _build_ui(self) -> None:
        tabs = QTabWidget(self)
        self.tabs = tabs
        page = QWidget()
        col = QVBoxLayout(page)
        col.setContentsMargins(6, 6, 6, 6)
        col.setSpacing(6)

        # ---- host
        host_row = QHBoxLayout()
        self.host_label = QLabel("")
        self.host_label.setWordWrap(True)
        self.host_label.setObjectName("hostLabel")
        self.btn_connect = QPushButton("Connect")
        self.btn_connect.setToolTip("Start the local host / connect to the remote host")
        self.btn_connect.clicked.connect(self.connect_host)
        self.btn_host = QPushButton("Host…")
        self.btn_host.setToolTip("Local or remote host, model folder, URL and token")
        self.btn_host.clicked.connect(self.host_dialog)
        host_row.addWidget(self.host_label, 1)
        host_row.addWidget(self.btn_connect)
        host_row.addWidget(self.btn_host)
        col.addLayout(host_row)

        # ---- generation settings
        box = QGroupBox("Settings")
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.spin_candidates = QSpinBox()
        self.spin_candidates.setRange(1, MAX_CANDIDATES)
        self.spin_candidates.setToolTip("How many alternatives to generate at once (1–16)")
        self.spin_bars = QSpinBox()
        self.spin_bars.setRange(1, MAX_BARS)
        self.spin_bars.setSuffix(" bars")
        self.spin_bars.setToolTip("Length of a continuation (infill: the selected bars)")
        row = QHBoxLayout()
        row.addWidget(self.spin_candidates)
        row.addWidget(QLabel("Length"))
        row.addWidget(self.spin_bars)
        form.addRow("Candidates", row)
        self.spin_temperature = QDoubleSpinBox()
        self.spin_temperature.setRange(0.05, 2.0)
        self.spin_temperature.setSingleStep(0.05)
        self.spin_temperature.setToolTip("Higher: more adventurous, lower: safer")
        self.spin_top_p = QDoubleSpinBox()
        self.spin_top_p.setRange(0.05, 1.0)
        self.spin_top_p.setSingleStep(0.05)
        self.spin_top_p.setToolTip("Nucleus sampling: only the most likely tokens that add up to this probability")
        row = QHBoxLayout()
        row.addWidget(self.spin_temperature)
        row.addWidget(QLabel("Top-p"))
        row.addWidget(self.spin_top_p)
        form.addRow("Temperature", row)
        self.chk_key = QCheckBox("Lock")
        self.chk_key.setToolTip("Only notes of this key/scale")
        self.combo_root = QComboBox()
        self.combo_root.addItems(list(NOTE_NAMES))
        self.combo_scale = QComboBox()
        self.combo_scale.addItems(list(SCALES))
        row = QHBoxLayout()
        row.addWidget(self.chk_key)
        row.addWidget(self.combo_root)
        row.addWidget(self.combo_scale)
        form.addRow("Key", row)
        self.spin_low, self.spin_high = PitchSpin(), PitchSpin()
        for spin in (self.spin_low, self.spin_high):
            spin.setRange(21, 108)
            spin.setToolTip("Pitch range the model may use")
        row = QHBoxLayout()
        row.addWidget(self.spin_low)
        row.addWidget(QLabel("to"))
        row.addWidget(self.spin_high)
        form.addRow("Range", row)
        self.spin_seed = QSpinBox()
        self.spin_seed.setRange(0, 2**31 - 1)
        self.spin_seed.setSpecialValueText("random")
        self.spin_seed.setToolTip("The same seed and settings give the same candidates (random: new each time)")
        self.chk_score = QCheckBox("Score with MAA")
        self.chk_score.setToolTip("Render and score each candidate (CE/CU/PC/PQ) as soon as it is complete")
        row = QHBoxLayout()
        row.addWidget(self.spin_seed, 1)
        row.addWidget(self.chk_score)
        form.addRow("Seed", row)
        col.addWidget(box)
        for w in (self.spin_candidates, self.spin_bars, self.spin_temperature, self.spin_top_p, self.spin_seed,
                  self.spin_low, self.spin_high):
            w.valueChanged.connect(self._options_from_ui)
        for w in (self.chk_key, self.chk_score):
            w.toggled.connect(self._options_from_ui)
        for w in (self.combo_root, self.combo_scale):
            w.currentIndexChanged.connect(self._options_from_ui)

        # ---- generate buttons + progress
        row = QHBoxLayout()
        self.btn_continue = QPushButton("▶ Continue")
        self.btn_continue.setToolTip("Continue from the end of the selection, or from the playhead (Ctrl+G)")
        self.btn_continue.clicked.connect(self.continue_)
        self.btn_regen = QPushButton("⟳ Regenerate selection")
        self.btn_regen.setToolTip("Rewrite the bars of the selected notes, keeping what comes before and after "
                                  "(Ctrl+Shift+G)")
        self.btn_regen.clicked.connect(self.regenerate_selection)
        self.btn_stop = QPushButton("■ Stop")
        self.btn_stop.clicked.connect(self.stop)
        row.addWidget(self.btn_continue, 1)
        row.addWidget(self.btn_regen, 1)
        row.addWidget(self.btn_stop)
        col.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setMaximumHeight(16)
        self.progress.hide()
        col.addWidget(self.progress)
        self.job_label = QLabel("")
        self.job_label.setWordWrap(True)
        self.job_label.setStyleSheet(DIM)
        col.addWidget(self.job_label)

        # ---- candidates
        box = QGroupBox("Candidates")
        inner = QVBoxLayout(box)
        self.random_warning = QLabel("⚠ MAA has random weights: these scores are for tests only, not real ratings")
        self.random_warning.setWordWrap(True)
        self.random_warning.setStyleSheet(WARN + " font-weight: bold;")
        self.random_warning.hide()
        inner.addWidget(self.random_warning)
        sort_row = QHBoxLayout()
        sort_row.addWidget(QLabel("Best of N by"))
        self.combo_sort = QComboBox()
        self.combo_sort.addItems(["order", *AXES])
        self.combo_sort.setToolTip("Sort the candidates by an MAA axis (highest first)")
        self.combo_sort.currentTextChanged.connect(self.sort_by)
        sort_row.addWidget(self.combo_sort)
        sort_row.addStretch(1)
        inner.addLayout(sort_row)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(0, Qt.AscendingOrder)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setItemDelegateForColumn(0, SwatchDelegate(self.table))
        bars = ScoreBarDelegate(self.table)
        for c in range(2, 6):
            self.table.setItemDelegateForColumn(c, bars)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Stretch)
        header.setSectionResizeMode(0, QHeaderView.Fixed)
        header.setSectionResizeMode(1, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(6, QHeaderView.ResizeToContents)
        header.resizeSection(0, 46)
        self.table.setMinimumHeight(150)
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection)
        self.table.doubleClicked.connect(lambda _i: self.audition_selected(CONTEXT))
        inner.addWidget(self.table)
        row = QHBoxLayout()
        self.btn_solo = QPushButton("▶ Solo")
        self.btn_solo.setToolTip("Hear the candidate alone")
        self.btn_solo.clicked.connect(lambda: self.audition_selected(SOLO))
        self.btn_context = QPushButton("▶ In context")
        self.btn_context.setToolTip("Hear the sketch with the candidate, from a bar before it")
        self.btn_context.clicked.connect(lambda: self.audition_selected(CONTEXT))
        self.btn_ab = QPushButton("A/B")
        self.btn_ab.setToolTip("Switch between the last two candidates you picked, keeping the position "
                               "(Ctrl+Shift+B)")
        self.btn_ab.clicked.connect(self.ab_toggle)
        self.btn_accept = QPushButton("✓ Accept")
        self.btn_accept.setToolTip("Add the candidate's notes to the sketch (one undo step; Ctrl+Return)")
        self.btn_accept.clicked.connect(self.accept_selected)
        self.btn_discard = QPushButton("✗ Discard")
        self.btn_discard.clicked.connect(self.discard_selected)
        self.btn_clear = QPushButton("Clear")
        self.btn_clear.setToolTip("Remove all candidates from the roll")
        self.btn_clear.clicked.connect(self.clear_candidates)
        for b in (self.btn_solo, self.btn_context, self.btn_ab):
            row.addWidget(b)
        inner.addLayout(row)
        row = QHBoxLayout()
        for b in (self.btn_accept, self.btn_discard, self.btn_clear):
            row.addWidget(b)
        inner.addLayout(row)
        col.addWidget(box, 1)

        # ---- search
        box = QGroupBox("Reward-guided search")
        form = QFormLayout(box)
        self.combo_reward = QComboBox()
        self.combo_reward.setToolTip("What the search maximises. MAA axes need MAA weights on the host; "
                                     "the offline rewards use the symbolic features")
        self.spin_beams = QSpinBox()
        self.spin_beams.setRange(1, 8)
        self.spin_beams.setToolTip("Beams kept after every bar (K)")
        self.spin_expand = QSpinBox()
        self.spin_expand.setRange(1, 8)
        self.spin_expand.setToolTip("One-bar continuations tried per beam and bar")
        row = QHBoxLayout()
        row.addWidget(self.spin_beams)
        row.addWidget(QLabel("tries/beam"))
        row.addWidget(self.spin_expand)
        form.addRow("Reward", self.combo_reward)
        form.addRow("Beams", row)
        self.spin_budget = QDoubleSpinBox()
        self.spin_budget.setRange(1, 600)
        self.spin_budget.setSuffix(" s")
        self.spin_budget.setDecimals(0)
        self.spin_budget.setToolTip("Time budget: the search returns its best beams when it runs out")
        self.btn_search = QPushButton("⚲ Search")
        self.btn_search.setToolTip("Grow the beams one bar at a time from the continuation point, keeping the best")
        self.btn_search.clicked.connect(self.search)
        row = QHBoxLayout()
        row.addWidget(self.spin_budget, 1)
        row.addWidget(self.btn_search, 1)
        form.addRow("Budget", row)
        for w in (self.spin_beams, self.spin_expand, self.spin_budget):
            w.valueChanged.connect(self._options_from_ui)
        self.combo_reward.currentIndexChanged.connect(self._options_from_ui)
        col.addWidget(box)

        # ---- MAA
        box = QGroupBox("MAA scores (Meta Audiobox Aesthetics)")
        inner = QVBoxLayout(box)
        self.maa_label = QLabel("")
        self.maa_label.setWordWrap(True)
        inner.addWidget(self.maa_label)
        row = QHBoxLayout()
        from engine.maa_weights import MAA_DOWNLOAD_BYTES

        self.btn_download = QPushButton(f"Download weights ({MAA_DOWNLOAD_BYTES / 1e6:.0f} MB)")
        self.btn_download.setToolTip("Fetch facebook/audiobox-aesthetics checkpoint.pt from huggingface.co")
        self.btn_download.clicked.connect(self.download_maa)
        self.btn_maa_file = QPushButton("Use local file…")
        menu = QMenu(self.btn_maa_file)
        menu.addAction("checkpoint.pt file…", self.choose_maa_file)
        menu.addAction("Hugging Face folder…", self.choose_maa_folder)
        self.btn_maa_file.setMenu(menu)
        row.addWidget(self.btn_download)
        row.addWidget(self.btn_maa_file)
        inner.addLayout(row)
        self.maa_progress = QProgressBar()
        self.maa_progress.setMaximumHeight(14)
        self.maa_progress.hide()
        inner.addWidget(self.maa_progress)
        row = QHBoxLayout()
        self.sketch_label = QLabel("")
        self.sketch_label.setWordWrap(True)
        row.addWidget(self.sketch_label, 1)
        row.addWidget(QLabel("Strip"))
        self.combo_strip = QComboBox()
        self.combo_strip.addItems(list(AXES))
        self.combo_strip.setToolTip("Axis shown per 10-s window on the roll")
        self.combo_strip.currentTextChanged.connect(self.strip.set_axis)
        row.addWidget(self.combo_strip)
        inner.addLayout(row)
        col.addWidget(box)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(page)
        scroll.setFrameShape(QScrollArea.NoFrame)
        tabs.addTab(scroll, "Generate")

        # ---- history
        hist = QWidget()
        hl = QVBoxLayout(hist)
        hl.setContentsMargins(4, 4, 4, 4)
        self.history_tree = QTreeWidget()
        self.history_tree.setHeaderLabels(["When", "Mode", "Settings", "Model", "Result"])
        self.history_tree.setRootIsDecorated(False)
        self.history_tree.setAlternatingRowColors(True)
        self.history_tree.itemDoubleClicked.connect(self._restore_history_item)
        hl.addWidget(self.history_tree)
        tip = QLabel("Every request with its settings, model and scores is saved with the project. "
                     "Double-click to show its remaining candidates again.")
        tip.setWordWrap(True)
        tip.setStyleSheet(DIM)
        hl.addWidget(tip)
        tabs.addTab(hist, "History")
        self.setWidget(tabs)
        self.setMinimumWidth(380)

    def _make_actions(self) -> None:
        def act(text, keys, slot, tip=""):
            a = QAction(text, self.win)
            if keys:
                a.setShortcut(QKeySequence(keys))
            if tip:
                a.setStatusTip(tip)
            a.triggered.connect(slot)
            self.win.addAction(a)
            return a

        self.act_continue = act("&Continue", "Ctrl+G", self.continue_,
                                "Continue from the end of the selection or the playhead")
        self.act_regenerate = act("&Regenerate Selection", "Ctrl+Shift+G", self.regenerate_selection,
                                  "Rewrite the selected bars")
        self.act_search = act("Reward-Guided &Search", None, self.search)
        self.act_stop = act("S&top Generating", None, self.stop)
        self.act_accept = act("&Accept Candidate", "Ctrl+Return", self.accept_selected)
        self.act_discard = act("&Discard Candidate", None, self.discard_selected)
        self.act_ab = act("A/&B Compare", "Ctrl+Shift+B", self.ab_toggle)
        self.act_host = act("&Host…", None, self.host_dialog)

    def install_menu(self, menubar) -> QMenu:
        """A Generate menu before Help."""
        menu = QMenu("&Generate", menubar)
        menu.addActions([self.act_continue, self.act_regenerate, self.act_search, self.act_stop])
        menu.addSeparator()
        menu.addActions([self.act_accept, self.act_discard, self.act_ab])
        menu.addSeparator()
        menu.addAction(self.act_host)
        before = next((a for a in menubar.actions() if a.text().replace("&", "") == "Help"), None)
        if before is not None:
            menubar.insertMenu(before, menu)
        else:
            menubar.addMenu(menu)
        self.menu = menu
        return menu

    # ------------------------------------------------------------------ options <-> UI
    def _apply_options_to_ui(self) -> None:
        o = self.options
        widgets = (self.spin_candidates, self.spin_bars, self.spin_temperature, self.spin_top_p, self.spin_seed,
                   self.spin_low, self.spin_high, self.chk_key, self.chk_score, self.combo_root, self.combo_scale,
                   self.spin_beams, self.spin_expand, self.spin_budget, self.combo_reward)
        for w in widgets:
            w.blockSignals(True)
        self.spin_candidates.setValue(o.candidates)
        self.spin_bars.setValue(o.bars)
        self.spin_temperature.setValue(o.temperature)
        self.spin_top_p.setValue(o.top_p)
        self.spin_seed.setValue(o.seed)
        self.spin_low.setValue(o.low)
        self.spin_high.setValue(o.high)
        self.chk_key.setChecked(o.key_lock)
        self.chk_score.setChecked(o.score)
        self.combo_root.setCurrentIndex(o.key_root)
        self.combo_scale.setCurrentText(o.key_scale)
        self.spin_beams.setValue(o.search_beams)
        self.spin_expand.setValue(o.search_expansions)
        self.spin_budget.setValue(o.search_budget_s)
        self._fill_rewards()
        for w in widgets:
            w.blockSignals(False)
        self.combo_root.setEnabled(o.key_lock)
        self.combo_scale.setEnabled(o.key_lock)

    def _fill_rewards(self) -> None:
        maa = self.host.maa_status() in ("available", "random-weights")
        want = self.options.search_reward
        self.combo_reward.blockSignals(True)
        self.combo_reward.clear()
        names = ([*MAA_REWARDS] if maa else []) + list(OFFLINE_REWARDS)
        for name in names:
            label = reward_label(name)
            if name in MAA_REWARDS and self.host.maa_status() == "random-weights":
                label += " (random weights — test only)"
            self.combo_reward.addItem(label, name)
        i = self.combo_reward.findData(want)
        self.combo_reward.setCurrentIndex(i if i >= 0 else 0)
        self.combo_reward.blockSignals(False)

    def _options_from_ui(self, *_args) -> None:
        o = self.options
        o.candidates = self.spin_candidates.value()
        o.bars = self.spin_bars.value()
        o.temperature = round(self.spin_temperature.value(), 3)
        o.top_p = round(self.spin_top_p.value(), 3)
        o.seed = self.spin_seed.value()
        o.low, o.high = self.spin_low.value(), self.spin_high.value()
        o.key_lock = self.chk_key.isChecked()
        o.score = self.chk_score.isChecked()
        o.key_root = self.combo_root.currentIndex()
        o.key_scale = self.combo_scale.currentText()
        o.search_beams = self.spin_beams.value()
        o.search_expansions = self.spin_expand.value()
        o.search_budget_s = float(self.spin_budget.value())
        if self.combo_reward.currentData():
            o.search_reward = self.combo_reward.currentData()
        self.combo_root.setEnabled(o.key_lock)
        self.combo_scale.setEnabled(o.key_lock)
        o.save(self.settings)

    # ================================================================== host
    def connect_host(self) -> None:
        self.host.connect_host()

    def host_dialog(self) -> None:
        from studio.generate.hostdialog import HostDialog

        dlg = HostDialog(self.host.mode, self.host.model_dir or "", self.host.url, self.host.token, self)
        if dlg.exec():
            mode, model_dir, url, token = dlg.values()
            self.set_host(mode, model_dir=model_dir or None, url=url, token=token)

    def set_host(self, mode: str, *, model_dir: str | None = None, url: str = "", token: str = "",
                 maa_path: str | None = None, connect: bool = True) -> None:
        self.stop()
        self.host.configure(mode, model_dir=model_dir, maa_path=maa_path if maa_path is not None else self.host.maa_path,
                            url=url, token=token)
        self._save_host_settings()
        if connect:
            self.host.connect_host()

    def _on_host_changed(self) -> None:
        h = self.host
        self.host_label.setText(h.describe())
        self.host_label.setStyleSheet(OK if h.connected else (WARN if h.state == "failed" else DIM))
        self.host_label.setToolTip(h.error or (f"{h.url or 'local'} — device {h.device()}" if h.connected else ""))
        self.btn_connect.setText("Reconnect" if h.connected else "Connect")
        self.btn_connect.setEnabled(not h.busy)
        self._sync_maa()
        self._fill_rewards()
        self._sync_buttons()
        if h.connected:
            self._schedule_rescore(immediately=True)
            if self._pending is not None:
                action, self._pending = self._pending, None
                action()
        elif h.state == "failed" and self._pending is not None:
            self._pending = None
            self._set_job_text(f"Cannot generate: {h.error}", error=True)
            self.status.emit(f"Generation host unavailable: {h.error}")

    def _ensure_host(self, action) -> bool:
        """True when connected; otherwise start/connect and run `action` once connected."""
        if self.host.connected:
            return True
        self._pending = action
        if not self.host.busy:
            self.host.connect_host()
        self._set_job_text("Starting the local host (CPU)… the request runs as soon as it is up"
                           if self.host.mode == LOCAL else "Connecting to the host…")
        return False

    def maa_usable(self) -> bool:
        return self.host.maa_status() in ("available", "random-weights")

    def _sync_maa(self) -> None:
        status = self.host.maa_status()
        random_weights = status == "random-weights"
        self.model.set_show_scores(status in ("available", "random-weights"))
        downloading = self._download_job is not None and self._download_job.running
        if status == "available":
            text, style = "MAA ready — candidates and the sketch are scored (1–10).", OK
        elif random_weights:
            text, style = ("MAA has RANDOM WEIGHTS — scores are for tests and timing only, not real ratings.",
                           WARN + " font-weight: bold;")
        elif status == "missing":
            text, style = (f"MAA weights are not installed, so no scores are shown. {self.host.maa_reason()}", WARN)
            if self._download_error:
                text = f"Download failed: {self._download_error}\n\n{text}"
        else:
            text, style = "MAA status unknown until the host is connected.", DIM
        if not downloading or status != "missing":
            self.maa_label.setText(text)
            self.maa_label.setStyleSheet(style)
        self.btn_download.setVisible(status in ("missing", "unknown"))
        self.btn_download.setEnabled(not downloading)
        self.random_warning.setVisible(random_weights and any(i.scores for i in self.model.items))
        if status not in ("available", "random-weights"):
            self.strip.clear()
            self.sketch_label.setText("")
            self.sketch_scores = None

    # ================================================================== generation
    def continue_tick(self) -> int:
        sel = self.doc.selection
        if sel:
            return max(n.end for n in sel)
        return max(0, int(self.win.playhead_tick))

    def infill_span(self) -> tuple[int, int] | None:
        """(start bar, end bar) of the selected notes' onsets, or None without a selection."""
        sel = self.doc.selection
        if not sel:
            return None
        clip = self.doc.clip
        first = clip.bar_index_at(min(n.start for n in sel))
        last = clip.bar_index_at(max(n.start for n in sel))
        return first, last + 1

    def _base_payload(self, clip: Clip) -> dict:
        o = self.options
        payload = {"prompt_midi": base64.b64encode(clip.to_midi_bytes()).decode("ascii"),
                   "candidates": o.candidates, "bars": o.bars, "temperature": o.temperature, "top_p": o.top_p,
                   "score": bool(o.score)}
        if o.seed:
            payload["seed"] = o.seed
        allowed = o.allowed()
        if allowed is not None:
            payload["allowed_pitches"] = allowed
        return payload

    def continue_(self) -> None:
        import time

        self._click_time = time.monotonic()
        if not self._check_options():
            return
        if not self._ensure_host(self.continue_):
            return
        at = self.continue_tick()
        payload = self._base_payload(self.doc.clip)
        payload["at_tick"] = at
        self._start_generation("continue", payload, at_tick=at)

    def regenerate_selection(self) -> None:
        import time

        self._click_time = time.monotonic()
        span = self.infill_span()
        if span is None:
            self.status.emit("Select the notes whose bars should be regenerated")
            self._set_job_text("Regenerate selection: select some notes first", error=True)
            return
        if not self._check_options():
            return
        if not self._ensure_host(self.regenerate_selection):
            return
        payload = self._base_payload(self.doc.clip)
        payload["infill"] = {"start_bar": span[0], "end_bar": span[1]}
        payload["bars"] = span[1] - span[0]
        clip = self.doc.clip
        self._start_generation("infill", payload, span_ticks=(clip.bar_tick(span[0]), clip.bar_tick(span[1])),
                               span_bars=span)

    def _check_options(self) -> bool:
        self._adopt_project()  # a project opened just now (its deferred check may not have run yet)
        try:
            self.options.validate()
        except ValueError as exc:
            self._set_job_text(str(exc), error=True)
            return False
        if self._job is not None:
            self.stop()
        return True

    def _new_request(self, mode: str, **extra) -> dict:
        o = self.options
        entry = {"id": uuid.uuid4().hex[:12], "time": datetime.datetime.now().isoformat(timespec="seconds"),
                 "mode": mode, "settings": o.to_dict(), "allowed_pitches": o.allowed(),
                 "model": self.host.model_version(),
                 "host": {"mode": self.host.mode, "url": self.host.url if self.host.mode == REMOTE else "local",
                          "device": self.host.device()},
                 "maa": self.host.maa_status(), "status": "running", "candidates": 0, "scores": [],
                 "accepted": None, **extra}
        history = self.win.project_extras.history
        history.append(entry)
        del history[:-MAX_PROJECT_HISTORY]
        self._request = entry
        self._refresh_history()
        return entry

    def _start_generation(self, mode: str, payload: dict, *, at_tick: int | None = None,
                         span_ticks: tuple[int, int] | None = None, span_bars: tuple[int, int] | None = None) -> None:
        self.audition.stop()
        self.clear_candidates(keep_region=False)
        request = self._new_request(mode, at_tick=at_tick, span_bars=list(span_bars) if span_bars else None,
                                    span_ticks=list(span_ticks) if span_ticks else None)
        self._by_index = {}
        for i in range(payload["candidates"]):
            item = CandidateItem(index=i, request=request["id"], mode=mode, span=span_ticks)
            self._by_index[i] = item
            self.model.add(item)
        self._rebuild_ghosts()
        self.ghosts.set_region(span_ticks)
        self.ghosts.reset_paint_clock()
        job = GenerationJob(self.host.client, payload)
        job.note.connect(self._on_note)
        job.candidate.connect(self._on_candidate)
        job.done.connect(self._on_done)
        job.failed.connect(self._on_failed)
        job.cancelled_job.connect(self._on_cancelled)
        self._run_job(job)
        what = "Regenerating bars %d–%d" % (span_bars[0] + 1, span_bars[1]) if span_bars else \
            f"Continuing from bar {self.doc.clip.bar_index_at(at_tick) + 1}"
        self._set_job_text(f"{what}: {payload['candidates']} candidate(s)…")
        self.progress.setRange(0, payload["candidates"])
        self.progress.setValue(0)
        self.progress.setFormat("%v of %m candidates complete")
        self.progress.show()

    def _run_job(self, job) -> None:
        self._job = job
        self._jobs.add(job)
        job.finished_job.connect(self._on_job_finished)
        job.start()
        self._sync_buttons()

    def _on_job_finished(self) -> None:
        job = self.sender()
        if job is None:
            return
        job.wait(2000)
        self._jobs.discard(job)
        if job is self._job:
            self._job = None
            self.progress.hide()
        if job is self._score_job:
            self._score_job = None
            if self._scored_serial != self._clip_serial:
                self._schedule_rescore()
        if job is self._download_job:
            self._download_job = None
            self.maa_progress.hide()
            self._sync_maa()
        self._sync_buttons()

    @property
    def generating(self) -> bool:
        return self._job is not None

    def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()

    # ------------------------------------------------------------------ streamed events
    def _item(self, index: int) -> CandidateItem | None:
        return self._by_index.get(index)

    def _layer(self, item: CandidateItem) -> int:
        return self.model.items.index(item)

    def _on_note(self, index: int, note: Note) -> None:
        if self.sender() is not self._job:
            return
        item = self._item(index)
        if item is None or item not in self.model.items:
            return
        item.notes.append(note)
        self.ghosts.add_notes(self._layer(item), [note])
        if len(item.notes) == 1 or len(item.notes) % 8 == 0:
            self.model.item_changed(item)

    def _on_candidate(self, index: int, event: dict) -> None:
        if self.sender() is not self._job:
            return
        item = self._item(index)
        if item is None:
            return
        if event.get("notes_list") is not None:
            item.notes = list(event["notes_list"])
        item.features = event.get("features")
        item.scores = event.get("scores")
        item.random_weights = bool(event.get("random_weights"))
        item.scores_error = event.get("scores_error")
        item.finished_by = event.get("finished_by")
        item.status = "ready"
        self._store_candidate(item)
        self.model.item_changed(item)
        if item in self.model.items:
            self.ghosts.set_ghost_notes(self._ghost_layers())
        done = sum(1 for i in self._by_index.values() if i.status != "streaming")
        self.progress.setValue(done)
        if self._request is not None:
            self._request["candidates"] = done
            self._request["scores"] = [i.scores for i in sorted(self._by_index.values(), key=lambda i: i.index)]
        self._sync_maa()
        self._resort()

    def _on_done(self, event: dict) -> None:
        if self.sender() is not self._job:
            return
        req = self._request
        if req is not None:
            req["status"] = "completed"
            req["elapsed_s"] = event.get("elapsed_s")
            if event.get("model"):
                req["model"] = {k: event["model"].get(k) for k in ("path", "parameters", "layers", "hidden_size",
                                                                  "context_length")}
        empty = [i for i in self._by_index.values() if not i.notes]
        for item in self._by_index.values():
            if item.status == "streaming":
                item.status = "ready"
                self.model.item_changed(item)
        n = len(self._by_index)
        text = f"{n - len(empty)} of {n} candidates ready"
        if empty:
            text += f" ({len(empty)} wrote no notes)"
        if event.get("elapsed_s") is not None:
            text += f" in {event['elapsed_s']:.1f} s"
        self._set_job_text(text + ". Audition, compare, then accept or discard.")
        self._mark_modified()
        self._refresh_history()
        self._sync_buttons()
        if self.table.selectionModel().selectedRows() == [] and self.model.items:
            self.select_item(self._best_item() or self.model.items[0])

    def _on_failed(self, reason: str) -> None:
        job = self.sender()
        if job is self._download_job:
            return
        if self._request is not None and job is self._job:
            self._request["status"] = "failed"
            self._request["error"] = reason
            self._refresh_history()
        self._set_job_text(f"Generation failed: {reason}", error=True)
        self.status.emit(f"Generation failed: {reason}")
        for item in list(self._by_index.values()):
            if item.status == "streaming":
                item.status = "ready" if item.notes else "discarded"
                if item.status == "discarded":
                    self.model.remove(item)
                else:
                    self.model.item_changed(item)
        self._rebuild_ghosts()

    def _on_cancelled(self) -> None:
        if self._request is not None:
            self._request["status"] = "cancelled"
            self._refresh_history()
        kept = 0
        for item in list(self._by_index.values()):
            if item.status == "streaming":
                if item.notes:
                    item.status = "ready"
                    item.finished_by = "cancelled"
                    self._store_candidate(item)
                    self.model.item_changed(item)
                    kept += 1
                else:
                    self.model.remove(item)
        self._rebuild_ghosts()
        self._set_job_text(f"Stopped; kept {kept} partial candidate(s)")

    # ================================================================== search
    def search(self) -> None:
        if not self._check_options():
            return
        o = self.options
        if o.search_reward in MAA_REWARDS and self.host.connected and not self.maa_usable():
            o.search_reward = "scale"
            self._fill_rewards()
        if not self._ensure_host(self.search):
            return
        if o.search_reward in MAA_REWARDS and not self.maa_usable():
            self._set_job_text("This reward needs MAA weights on the host; pick an offline reward", error=True)
            return
        self.audition.stop()
        self.clear_candidates()
        at = self.continue_tick()
        request = self._new_request("search", at_tick=at, reward=o.search_reward, beams=o.search_beams,
                                    budget_s=o.search_budget_s)
        self._by_index = {}
        job = SearchJob(self.host.client, self.doc.clip, at, bars=o.bars, beams=o.search_beams,
                        expansions=o.search_expansions, reward=o.search_reward, budget_s=o.search_budget_s,
                        temperature=o.temperature, top_p=o.top_p, allowed_pitches=o.allowed(),
                        seed=o.seed or None)
        job.step.connect(self._on_search_step)
        job.done.connect(self._on_search_done)
        job.failed.connect(self._on_failed)
        job.progress.connect(self._on_progress)
        job.cancelled_job.connect(self._on_cancelled)
        self._run_job(job)
        self._set_job_text(f"Searching {o.bars} bar(s) with {o.search_beams} beam(s), "
                           f"reward {reward_label(o.search_reward)}, budget {o.search_budget_s:.0f} s…")
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("%p%")
        self.progress.show()
        request["status"] = "running"

    def _show_beams(self, beams, status: str) -> None:
        req = self._request
        items = []
        for k, beam in enumerate(beams):
            item = CandidateItem(index=k, request=req["id"] if req else "", mode="search", notes=list(beam.notes),
                                 scores=beam.scores, reward=beam.reward, status=status,
                                 random_weights=self.host.maa_status() == "random-weights" and beam.scores is not None)
            items.append(item)
        self._by_index = {i.index: i for i in items}
        self.model.set_items(items)
        self._rebuild_ghosts()

    def _on_search_step(self, steps: int, beams) -> None:
        if self.sender() is not self._job:
            return
        self._show_beams(beams, "streaming")

    def _on_search_done(self, result) -> None:
        if self.sender() is not self._job:
            return
        self._show_beams(result.beams, "ready")
        for item in self.model.items:
            self._store_candidate(item)
        req = self._request
        if req is not None:
            req.update(status="completed", candidates=len(result.beams), steps=result.steps_done,
                       stopped_by=result.stopped_by, elapsed_s=round(result.elapsed_s, 3), requests=result.requests,
                       rewards=[b.reward for b in result.beams], scores=[b.scores for b in result.beams])
        why = {"bars": "all bars done", "budget": "time budget spent", "cancelled": "stopped"}[result.stopped_by]
        self._set_job_text(f"Search: {result.steps_done} of {result.bars_wanted} bar(s) in {result.elapsed_s:.1f} s "
                           f"({why}, {result.requests} host requests); best reward "
                           f"{result.beams[0].reward:.3f}" if result.beams and result.beams[0].reward is not None
                           else f"Search ended ({why}) without a result")
        self._mark_modified()
        self._refresh_history()
        self._sync_maa()
        if self.model.items:
            self.select_item(self.model.items[0])

    def _on_progress(self, text: str, fraction: float) -> None:
        if self.sender() is self._job:
            self.progress.setValue(int(1000 * max(0.0, fraction)))
            self._set_job_text(text)

    # ================================================================== candidates
    def _ghost_layers(self):
        layers = []
        for item in self.model.items:
            layers.append((item.notes, item.colour))
        return layers

    def _rebuild_ghosts(self) -> None:
        self.ghosts.set_ghost_notes(self._ghost_layers())
        self._on_table_selection()

    def selected_item(self) -> CandidateItem | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        src = self.proxy.mapToSource(rows[0])
        return self.model.items[src.row()] if 0 <= src.row() < len(self.model.items) else None

    def select_item(self, item: CandidateItem) -> None:
        if item not in self.model.items:
            return
        src = self.model.index(self.model.items.index(item), 0)
        idx = self.proxy.mapFromSource(src)
        self.table.selectionModel().select(idx, QItemSelectionModel.ClearAndSelect | QItemSelectionModel.Rows)
        self.table.scrollTo(idx)

    def _on_table_selection(self, *_args) -> None:
        item = self.selected_item()
        self.ghosts.set_emphasis(self.model.items.index(item) if item is not None else None)
        if item is not None and (not self._ab or self._ab[-1] is not item):
            self._ab = [i for i in self._ab if i is not item and i in self.model.items][-1:] + [item]
        self._sync_buttons()

    def _best_item(self, axis: str | None = None) -> CandidateItem | None:
        axis = axis or (self.combo_sort.currentText() if self.combo_sort.currentText() in AXES else "CE")
        scored = [i for i in self.model.items if i.scores and axis in i.scores and self.model.show_scores]
        return max(scored, key=lambda i: i.scores[axis]) if scored else None

    def sort_by(self, axis: str) -> None:
        if axis in AXES:
            self.table.sortByColumn(2 + AXES.index(axis), Qt.DescendingOrder)
        else:
            self.table.sortByColumn(0, Qt.AscendingOrder)

    def _resort(self) -> None:
        self.proxy.invalidate()

    def audition_selected(self, mode: str) -> None:
        item = self.selected_item()
        if item is None or not item.notes:
            self.status.emit("Pick a candidate with notes to hear it")
            return
        self.audition.play(item, mode)
        self.status.emit(f"Auditioning {item.label} {'solo' if mode == SOLO else 'in context'}"
                         + ("" if self.win.transport.has_audio else " (no audio output: silent)"))

    def ab_toggle(self) -> None:
        """Play the other of the last two picked candidates, keeping the playhead (A/B)."""
        ab = [i for i in self._ab if i in self.model.items and i.notes]
        if len(ab) < 2:
            self.status.emit("A/B: pick two candidates in the list first")
            return
        current = self.audition.item if self.audition.active else None
        target = ab[0] if current is ab[1] else ab[1]
        mode = self.audition.mode or CONTEXT
        self.audition.play(target, mode, restart=not self.audition.active)
        self.select_item(target)
        self._ab = [i for i in ab if i is not target] + [target]
        self.status.emit(f"A/B: now hearing {target.label}")

    def accept_selected(self) -> None:
        item = self.selected_item()
        if item is None:
            self.status.emit("Pick a candidate to accept")
            return
        self.accept(item)

    def accept(self, item: CandidateItem) -> bool:
        """One undoable edit: add the candidate's notes (an infill replaces its bars' notes)."""
        if not item.notes:
            self.status.emit("This candidate has no notes")
            return False
        self.audition.stop()
        clip = self.doc.clip
        base = clip.notes
        replaced = 0
        if item.span is not None:
            a, b = item.span
            kept = [n for n in base if not a <= n.start < b]
            replaced = len(base) - len(kept)
            base = kept
        notes = dedupe_notes(list(base) + list(item.notes))
        new_keys = {(n.start, n.pitch) for n in item.notes}
        selection = [n for n in notes if (n.start, n.pitch) in new_keys]
        verb = f"Regenerate bars ({item.label})" if item.span is not None else f"Accept candidate {item.label}"
        self.doc.push_clip(verb, clip.with_notes(notes), selection)
        item.status = "accepted"
        self._store_candidate(item)
        req = self._find_request(item.request)
        if req is not None:
            req["accepted"] = item.index
        self.model.remove(item)
        self._by_index = {k: v for k, v in self._by_index.items() if v is not item}
        self._ab = [i for i in self._ab if i is not item]
        self._rebuild_ghosts()
        if not self.model.items:
            self.ghosts.set_region(None)
        self._refresh_history()
        self.status.emit(f"Accepted {item.label}: {len(item.notes)} notes" +
                         (f" replacing {replaced}" if item.span is not None else "") + " (Ctrl+Z undoes)")
        self._sync_buttons()
        return True

    def discard_selected(self) -> None:
        item = self.selected_item()
        if item is not None:
            self.discard(item)

    def discard(self, item: CandidateItem) -> None:
        if self.audition.item is item:
            self.audition.stop()
        item.status = "discarded"
        self._store_candidate(item)
        self.model.remove(item)
        self._by_index = {k: v for k, v in self._by_index.items() if v is not item}
        self._ab = [i for i in self._ab if i is not item]
        self._rebuild_ghosts()
        if not self.model.items:
            self.ghosts.set_region(None)
        self._mark_modified()
        self._sync_buttons()

    def clear_candidates(self, keep_region: bool = False) -> None:
        if self._job is not None and isinstance(self._job, GenerationJob):
            self.stop()
        self.audition.stop()
        self.model.set_items([])
        self._by_index = {}
        self._ab = []
        self.ghosts.clear()
        self.random_warning.hide()
        self._sync_buttons()

    # ------------------------------------------------------------------ project storage
    def _store_candidate(self, item: CandidateItem) -> None:
        cands = self.win.project_extras.candidates
        entry = getattr(item, "_entry", None)
        if entry is None or not any(e is entry for e in cands):
            entry = item.to_dict()
            item._entry = entry
            cands.append(entry)
            # Bound the file: drop the oldest entries that were not accepted first.
            while len(cands) > MAX_PROJECT_CANDIDATES:
                victim = next((e for e in cands if e.get("status") != "accepted"), cands[0])
                cands.remove(victim)
        else:
            entry.clear()
            entry.update(item.to_dict())

    def _find_request(self, rid: str) -> dict | None:
        for entry in reversed(self.win.project_extras.history):
            if isinstance(entry, dict) and entry.get("id") == rid:
                return entry
        return None

    def _mark_modified(self) -> None:
        mark = getattr(self.win, "mark_modified", None)
        if mark is not None:
            mark()

    def _adopt_project(self) -> None:
        """A project was opened (or a new sketch started): show its history and its open candidates."""
        project = self.win.project_extras
        if project is self._project:
            return
        self._project = project
        if self._job is not None:
            self.stop()
        self.clear_candidates()
        self.strip.clear()
        self.sketch_label.setText("")
        self._refresh_history()
        history = [h for h in project.history if isinstance(h, dict)]
        if history:
            self._show_request(history[-1]["id"])

    def _show_request(self, rid: str) -> int:
        entries = [e for e in self.win.project_extras.candidates
                   if isinstance(e, dict) and e.get("request") == rid and e.get("status") in ("ready", "streaming")]
        items = []
        for e in entries:
            try:
                item = CandidateItem.from_dict(e)
            except (TypeError, ValueError, KeyError):
                continue
            item.status = "ready"
            item._entry = e
            items.append(item)
        self.clear_candidates()
        self.model.set_items(items)
        self._by_index = {i.index: i for i in items}
        self._rebuild_ghosts()
        spans = {i.span for i in items if i.span}
        self.ghosts.set_region(next(iter(spans)) if len(spans) == 1 else None)
        self._sync_maa()
        self._sync_buttons()
        return len(items)

    def _restore_history_item(self, tree_item: QTreeWidgetItem, _col: int) -> None:
        rid = tree_item.data(0, Qt.UserRole)
        n = self._show_request(rid)
        self.tabs.setCurrentIndex(0)
        self.status.emit(f"{n} candidate(s) of that request shown" if n else "No open candidates left in that request")

    def _refresh_history(self) -> None:
        tree = self.history_tree
        tree.clear()
        for entry in reversed(self.win.project_extras.history):
            if not isinstance(entry, dict):
                continue
            settings = entry.get("settings") or {}
            opts = GenerateOptions()
            for k, v in settings.items():
                if hasattr(opts, k):
                    setattr(opts, k, v)
            desc = opts.describe() if entry.get("mode") != "search" else \
                f"{reward_label(entry.get('reward', '?'))}, {entry.get('beams', '?')} beams, " \
                f"{entry.get('budget_s', '?')} s"
            model = entry.get("model") or {}
            model_name = Path(model["path"]).name if model.get("path") else "?"
            result = entry.get("status", "?")
            scores = [s for s in entry.get("scores") or [] if s]
            if scores:
                best = max(s.get("CE", 0) for s in scores)
                result += f", best CE {best:.2f}" + (" (random MAA)" if entry.get("maa") == "random-weights" else "")
            if entry.get("accepted") is not None:
                result += f", accepted #{int(entry['accepted']) + 1}"
            when = str(entry.get("time", "")).replace("T", " ")
            item = QTreeWidgetItem([when, str(entry.get("mode", "")), desc, model_name, result])
            item.setData(0, Qt.UserRole, entry.get("id"))
            item.setToolTip(2, desc)
            tree.addTopLevelItem(item)
        for c in range(tree.columnCount()):
            tree.resizeColumnToContents(c)

    # ================================================================== sketch scoring
    def _on_clip_changed(self) -> None:
        # MainWindow.load_project swaps `project_extras` right after loading the clip: look once it has.
        self._adopt_timer.start()
        self._clip_serial += 1
        self.strip.set_stale(True)
        self._schedule_rescore()

    def _schedule_rescore(self, immediately: bool = False) -> None:
        if not self.host.connected or not self.maa_usable():
            return
        self._rescore_timer.start(0 if immediately else RESCORE_DEBOUNCE_MS)

    def rescore_sketch(self) -> None:
        """Score the sketch per 10-s window on a worker (debounced after edits)."""
        if not self.host.connected or not self.maa_usable():
            return
        if not self.doc.notes:
            self.strip.clear()
            self.sketch_label.setText("The sketch is empty: nothing to score")
            self._scored_serial = self._clip_serial
            return
        if self._score_job is not None:
            self._score_job.cancel()  # it ends after its current window; a new one starts then
            return
        job = SketchScoreJob(self.host.client, self.doc.clip, self._clip_serial)
        job.window.connect(self._on_score_window)
        job.done.connect(self._on_sketch_scored)
        job.failed.connect(self._on_score_failed)
        self._score_job = job
        self._jobs.add(job)
        job.finished_job.connect(self._on_job_finished)
        job.start()
        self.sketch_label.setText("Scoring the sketch…")
        self.sketch_label.setStyleSheet(DIM)

    def _on_score_window(self, i: int, window: dict) -> None:
        job = self.sender()
        if job is not self._score_job or job.serial != self._clip_serial:
            return
        self.strip.set_window(i, window, self.host.maa_status() == "random-weights")

    def _on_sketch_scored(self, result: dict) -> None:
        if result["serial"] != self._clip_serial:
            return  # the sketch changed meanwhile; the next job scores the new one
        self._scored_serial = result["serial"]
        random_weights = bool(result.get("random_weights"))
        self.sketch_scores = result
        self.strip.set_windows(result["windows"], random_weights)
        overall = result.get("overall")
        if overall:
            text = "Sketch: " + "  ".join(f"{a} {overall[a]:.2f}" for a in AXES)
            if random_weights:
                text += "  — random weights, test only"
            self.sketch_label.setText(text)
            self.sketch_label.setStyleSheet(WARN if random_weights else OK)

    def _on_score_failed(self, reason: str) -> None:
        self.sketch_label.setText(f"Sketch not scored: {reason}")
        self.sketch_label.setStyleSheet(WARN)

    # ================================================================== MAA weights
    def download_maa(self) -> None:
        if self._download_job is not None:
            self._download_job.cancel()
            return
        self._download_error = None
        job = MaaDownloadJob()
        job.progress.connect(self._on_download_progress)
        job.done.connect(self._on_download_done)
        job.failed.connect(self._on_download_failed)
        self._download_job = job
        self._jobs.add(job)
        job.finished_job.connect(self._on_job_finished)
        self.maa_progress.setRange(0, 1000)
        self.maa_progress.setValue(0)
        self.maa_progress.show()
        self.btn_download.setEnabled(False)
        job.start()

    def _on_download_progress(self, text: str, fraction: float) -> None:
        self.maa_progress.setValue(int(1000 * fraction))
        self.maa_label.setText(text)
        self.maa_label.setStyleSheet(DIM)

    def _on_download_failed(self, reason: str) -> None:
        self._download_error = reason
        self.maa_label.setText(f"Download failed: {reason}")
        self.maa_label.setStyleSheet(WARN)
        self.status.emit("MAA download failed (no internet?)")

    def _on_download_done(self, path: str) -> None:
        self.use_maa_weights(path)

    def choose_maa_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "MAA checkpoint", str(Path.home()),
                                              "MAA checkpoint (*.pt);;All files (*)")
        if path:
            self.use_maa_weights(path)

    def choose_maa_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "MAA Hugging Face folder", str(Path.home()))
        if path:
            self.use_maa_weights(path)

    def use_maa_weights(self, path: str) -> bool:
        """Use these MAA weights: the local host restarts with them; a remote host needs its own."""
        from engine.maa_weights import find_checkpoint

        found = find_checkpoint(path)
        if found is None:
            self.maa_label.setText(f"No MAA checkpoint at {path} (need checkpoint.pt or a folder with "
                                   "config.json + model.safetensors)")
            self.maa_label.setStyleSheet(WARN)
            return False
        self.host.maa_path = str(found)
        self._save_host_settings()
        if self.host.mode == REMOTE:
            self.maa_label.setText(f"Saved {found}. The remote host scores with its own weights: start "
                                   f"`smart serve --maa PATH` there.")
            self.maa_label.setStyleSheet(WARN)
            return True
        self.maa_label.setText("Restarting the local host with the MAA weights…")
        self.maa_label.setStyleSheet(DIM)
        self.stop()
        self.host.connect_host()
        return True

    # ================================================================== misc
    def _set_job_text(self, text: str, error: bool = False) -> None:
        self.job_label.setText(text)
        self.job_label.setStyleSheet(WARN if error else DIM)

    def _sync_buttons(self, *_args) -> None:
        running = self._job is not None
        item = self.selected_item()
        has_notes = item is not None and bool(item.notes)
        self.btn_stop.setEnabled(running)
        self.act_stop.setEnabled(running)
        self.btn_regen.setEnabled(bool(self.doc.selection))
        self.act_regenerate.setEnabled(bool(self.doc.selection))
        ready = has_notes and item.status != "streaming"
        for w in (self.btn_accept, self.act_accept):
            w.setEnabled(ready)
        for w in (self.btn_solo, self.btn_context):
            w.setEnabled(has_notes)
        self.btn_discard.setEnabled(item is not None)
        self.act_discard.setEnabled(item is not None)
        ab = len([i for i in self._ab if i in self.model.items and i.notes]) >= 2
        self.btn_ab.setEnabled(ab)
        self.act_ab.setEnabled(ab)
        self.btn_clear.setEnabled(bool(self.model.items))
        if self.audition.active and self.audition.item is not None:
            self.btn_ab.setText(f"A/B ({self.audition.item.label})")
        else:
            self.btn_ab.setText("A/B")

    def shutdown(self) -> None:
        """Stop every job and the local host (window closing)."""
        self._rescore_timer.stop()
        self._pending = None
        for job in list(self._jobs):
            job.cancel()
        for job in list(self._jobs):
            job.wait(5000)
        self._jobs.clear()
        self.audition.stop()
        self.host.shutdown()
