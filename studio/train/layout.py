"""The Train panel's layout: its widgets, created as attributes of the panel (like Qt Designer's `setupUi`);
what they do is wired up in `studio.train.panel`. Rows wrap to the dock's width."""

from __future__ import annotations

from PySide6.QtCore import Qt
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
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from engine import api
from studio.theme import STYLE_DIM as DIM
from studio.train.blindab import BlindAB
from studio.train.plots import TrainingPlots
from studio.train.taste_job import TasteTuneSection


def _wrap(layout) -> QWidget:
    w = QWidget()
    layout.setContentsMargins(0, 0, 0, 0)
    w.setLayout(layout)
    return w


def setup_ui(panel) -> None:
    """The widgets of `panel` (a TrainPanel), top to bottom: host and jobs, run controls, settings, prompts,
    taste tuning, plots, checkpoints, blind A/B, log."""
    scroll = QScrollArea(panel)
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # rows wrap to the dock's width
    body = QWidget()
    scroll.setWidget(body)
    panel.setWidget(scroll)
    v = QVBoxLayout(body)
    v.setContentsMargins(6, 6, 6, 6)

    # -- host + jobs on it
    panel.host_label = QLabel("")
    panel.host_label.setWordWrap(True)
    panel.host_label.setStyleSheet(DIM)
    v.addWidget(panel.host_label)
    row = QHBoxLayout()
    panel.jobs_combo = QComboBox()
    panel.jobs_combo.setToolTip("Training jobs on the host; pick one to follow it again. A remote host's jobs "
                               "keep running when the studio closes; the local host's end with the studio "
                               "(closing asks first).")
    panel.jobs_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    panel.jobs_combo.setMinimumContentsLength(12)
    panel.btn_refresh = QPushButton("Refresh")
    row.addWidget(QLabel("Job:"))
    row.addWidget(panel.jobs_combo, 1)
    row.addWidget(panel.btn_refresh)
    v.addLayout(row)

    # -- run controls first: they never move when a setting below changes size
    grid = QGridLayout()
    panel.btn_start = QPushButton("Start training")
    panel.btn_pause = QPushButton("Pause")
    panel.btn_pause.setToolTip("Stop after the current step (a checkpoint is saved); Resume continues")
    panel.btn_resume = QPushButton("Resume")
    panel.btn_cancel = QPushButton("Cancel")
    panel.btn_cancel.setToolTip("Stop now; Resume continues from the last checkpoint")
    for i, b in enumerate((panel.btn_start, panel.btn_pause, panel.btn_resume, panel.btn_cancel)):
        grid.addWidget(b, 0, i)
    grid.setColumnStretch(0, 2)
    for i in (1, 2, 3):
        grid.setColumnStretch(i, 1)
    v.addLayout(grid)
    panel.progress = QProgressBar()
    panel.progress.setRange(0, 1000)
    panel.progress.setFormat("")
    v.addWidget(panel.progress)
    panel.job_label = QLabel("No training job")
    panel.job_label.setWordWrap(True)
    v.addWidget(panel.job_label)

    # -- what to train with: reward and the MAA notice (where the eye is), then the preset's numbers
    box = QGroupBox("Settings")
    form = QFormLayout(box)
    form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
    form.setRowWrapPolicy(QFormLayout.WrapLongRows)
    panel.preset_combo = QComboBox()
    panel.preset_combo.setToolTip("Presets the host offers (paper: the SMART paper's settings, §3.5). "
                                 "Changing a value below keeps it.")
    form.addRow("Preset", panel.preset_combo)
    panel.preset_note = QLabel("")
    panel.preset_note.setWordWrap(True)
    panel.preset_note.setStyleSheet(DIM)
    form.addRow("", panel.preset_note)
    panel.reward_combo = QComboBox()
    panel.reward_combo.setToolTip("What counts as better. MAA axes are Meta Audiobox Aesthetics ratings of the "
                                 "rendered audio (1–10). Offline rewards count notes symbolically: no MAA, for "
                                 "trying the loop only.")
    form.addRow("Reward", panel.reward_combo)
    panel.weights_edit = QLineEdit("maa-ce=1,maa-pq=0.5")
    panel.weights_edit.setToolTip("Weighted MAA axes, e.g. maa-ce=1,maa-pq=0.5 (used with 'MAA weighted mix')")
    form.addRow("Weights", panel.weights_edit)
    panel.settings_form = form
    panel.maa_label = QLabel("")
    panel.maa_label.setWordWrap(True)
    panel.btn_download = QPushButton(f"Download the MAA scoring model ({api.MAA_DOWNLOAD_BYTES / 1e6:.0f} MB)")
    panel.btn_download.setToolTip("Fetch the Audiobox Aesthetics weights (the Generate panel shows progress)")
    mrow = QVBoxLayout()
    mrow.addWidget(panel.maa_label)
    mrow.addWidget(panel.btn_download)
    form.addRow("", _wrap(mrow))
    panel.spin_steps = QSpinBox()
    panel.spin_steps.setRange(1, api.MAX_STEPS)
    panel.spin_steps.setToolTip("Training iterations. Each one generates, scores and learns from a batch.")
    form.addRow("Steps", panel.spin_steps)
    panel.spin_prompts = QSpinBox()
    panel.spin_prompts.setRange(1, api.MAX_PROMPTS_PER_STEP)
    panel.spin_prompts.setToolTip("Prompts drawn per step (with replacement from the list above)")
    form.addRow("Prompts per step", panel.spin_prompts)
    panel.spin_group = QSpinBox()
    panel.spin_group.setRange(2, api.MAX_GROUP)
    panel.spin_group.setToolTip("Continuations per prompt. They are compared with each other: the ones scoring "
                               "above their group's average are reinforced.")
    form.addRow("Group size", panel.spin_group)
    panel.spin_tokens = QSpinBox()
    panel.spin_tokens.setRange(8, 4096)
    panel.spin_tokens.setToolTip("Longest continuation in tokens (about 4 tokens per note)")
    form.addRow("Max length (tokens)", panel.spin_tokens)
    panel.spin_beta = QDoubleSpinBox()
    panel.spin_beta.setDecimals(3)
    panel.spin_beta.setRange(0.0, 10.0)
    panel.spin_beta.setSingleStep(0.01)
    panel.spin_beta.setToolTip("β: how far the tuned model may drift from the original; 0 = no limit")
    form.addRow("β (stay close)", panel.spin_beta)
    panel.spin_lr = QDoubleSpinBox()
    panel.spin_lr.setDecimals(6)
    panel.spin_lr.setRange(1e-6, 0.5)
    panel.spin_lr.setSingleStep(1e-5)
    panel.spin_lr.setToolTip("Learning rate: how big each update is (decays linearly to 0)")
    form.addRow("Learning rate", panel.spin_lr)
    drow = QHBoxLayout()
    panel.chk_diversity = QCheckBox("on, at")
    panel.spin_diversity = QDoubleSpinBox()
    panel.spin_diversity.setRange(0.05, 0.95)
    panel.spin_diversity.setSingleStep(0.05)
    panel.spin_diversity.setValue(0.5)
    panel.spin_diversity.setToolTip("A fraction of the starting diversity")
    panel.chk_diversity.setToolTip("Stop when outputs get this much less varied than at the start "
                                  "(the final model is the best one above the floor)")
    drow.addWidget(panel.chk_diversity)
    drow.addWidget(panel.spin_diversity)
    drow.addWidget(QLabel("× start"))
    drow.addStretch(1)
    form.addRow("Diversity floor", _wrap(drow))
    panel.spin_save = QSpinBox()
    panel.spin_save.setRange(1, 10000)
    panel.spin_save.setValue(50)
    panel.spin_save.setToolTip("A checkpoint (a model you can use or compare) every N steps; pause always "
                              "writes one, cancel and crashes resume from the last one")
    form.addRow("Checkpoint every", panel.spin_save)
    v.addWidget(box)

    # -- prompts
    box = QGroupBox("Prompts — what the model learns to continue")
    pv = QVBoxLayout(box)
    panel.prompt_list = QListWidget()
    panel.prompt_list.setMaximumHeight(90)
    panel.prompt_list.setToolTip("Each prompt is a few bars of your sketch; the model continues it, the "
                                "continuations are rendered and scored, and the better ones are reinforced.")
    pv.addWidget(panel.prompt_list)
    row = QHBoxLayout()
    panel.btn_add_selection = QPushButton("Add selection")
    panel.btn_add_selection.setToolTip("The bars of the selected notes become a prompt")
    panel.btn_add_loop = QPushButton("Add loop region")
    panel.btn_add_loop.setToolTip("The notes inside the loop region become a prompt")
    panel.btn_remove_prompt = QPushButton("Remove")
    for b in (panel.btn_add_selection, panel.btn_add_loop, panel.btn_remove_prompt):
        row.addWidget(b)
    pv.addLayout(row)
    row = QHBoxLayout()
    panel.chk_procedural = QCheckBox("Mix in procedural prompts:")
    panel.chk_procedural.setToolTip("Random meter and tempo with a first note (the paper's prompts), alongside "
                                   "yours: keeps the model general while it learns your material.")
    panel.spin_procedural = QSpinBox()
    panel.spin_procedural.setRange(1, 64)
    panel.spin_procedural.setValue(4)
    row.addWidget(panel.chk_procedural)
    row.addWidget(panel.spin_procedural)
    row.addStretch(1)
    pv.addLayout(row)
    panel.counts_label = QLabel("")
    panel.counts_label.setWordWrap(True)
    panel.counts_label.setStyleSheet(DIM)
    pv.addWidget(panel.counts_label)
    v.addWidget(box)

    # -- tune toward the musician's own picks (the Generate panel's taste profile)
    panel.taste_section = TasteTuneSection(panel.taste_store)
    v.addWidget(panel.taste_section)

    # -- plots
    panel.plots = TrainingPlots()
    panel.plots.setFixedHeight(380)
    v.addWidget(panel.plots)

    # -- checkpoints
    box = QGroupBox("Checkpoints")
    cv = QVBoxLayout(box)
    panel.ckpt_table = QTableWidget(0, 3)
    panel.ckpt_table.setHorizontalHeaderLabels(["Step", "Reward", "Diversity"])
    panel.ckpt_table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
    panel.ckpt_table.verticalHeader().hide()
    panel.ckpt_table.setSelectionBehavior(QAbstractItemView.SelectRows)
    panel.ckpt_table.setSelectionMode(QAbstractItemView.SingleSelection)
    panel.ckpt_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
    panel.ckpt_table.setMaximumHeight(130)
    cv.addWidget(panel.ckpt_table)
    row = QHBoxLayout()
    panel.btn_use = QPushButton("Use this checkpoint")
    panel.btn_use.setToolTip("Generate with this checkpoint (the host switches its active model)")
    panel.btn_compare = QPushButton("Compare blind…")
    panel.btn_compare.setToolTip("The same prompts continued by the original and the tuned model, played in "
                                "random order without labels: you pick, your choices are saved.")
    row.addWidget(panel.btn_use)
    row.addWidget(panel.btn_compare)
    cv.addLayout(row)
    v.addWidget(box)

    # -- blind A/B
    panel.ab = BlindAB(panel.audition, panel.taste_store, lambda: panel.win.project_path)
    v.addWidget(panel.ab)

    # -- log
    panel.log_view = QPlainTextEdit()
    panel.log_view.setReadOnly(True)
    panel.log_view.setMaximumBlockCount(2000)
    panel.log_view.setMaximumHeight(110)
    v.addWidget(panel.log_view)
    v.addStretch(1)
