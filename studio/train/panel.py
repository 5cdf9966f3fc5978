"""The Train panel: fine-tune the policy with SMART (GRPO on the MAA score of rendered audio) as a job
on the policy host, follow it live, use its checkpoints, and compare them blind against the base model
(`blindab`). The presets and rewards are those the connected host offers (GET /v1/train/options).
"Tune toward my taste" (`taste_job`) sends the musician's picks as a taste-tuning job instead; it is
followed, plotted, paused and compared the same way.

Everything that talks to the host runs on worker threads (studio.train.workers); the panel shares the
Generate panel's host connection (one host per studio). Jobs live on the host: closing the studio or
losing the connection does not stop them, and the job list re-attaches to a running one.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDockWidget,
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
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine import api
from engine.maa_weights import AXES
from studio.generate.audition import Audition
from studio.generate.hostconn import LOCAL
from studio.theme import STYLE_DIM as DIM
from studio.theme import STYLE_OK as OK
from studio.theme import STYLE_WARN as WARN
from studio.train.blindab import BlindAB
from studio.train.plots import TrainingPlots
from studio.train.prompts import PromptClip, prompt_from_notes, prompt_from_region
from studio.train.taste_job import (TasteTuneSection, collect_pairs, describe_taste_record, is_dpo_record, job_kind,
                                    pair_prompts)
from studio.train.workers import CallJob, CompareJob, EventsWatcher
from studio.widgets import compact_combos, guard_wheel

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
MAX_COMPARE_PROMPTS = 4
WEIGHTED = "weighted"  # the panel's own entry: a weighted mix of MAA axes typed in the Weights field
# The panel's fields, as /v1/train option names (their values come from the preset chosen).
PRESET_FIELDS = ("steps", "prompts_per_step", "group", "max_completion_tokens", "beta", "lr", "reward", "save_every")


def preset_values(catalogue: dict, name: str) -> dict:
    """The panel's fields under preset `name` of a /v1/train/options body: the defaults, then the preset's."""
    defaults = {o["name"]: o.get("default") for o in catalogue.get("options", [])}
    values = {**defaults, **catalogue["presets"][name]["options"]}
    return {k: values[k] for k in PRESET_FIELDS if k in values}


def local_catalogue() -> dict:
    """What a host of this version offers, shown until the connected host has said (same contract)."""
    return api.train_options(maa_weights=False)
_ORPHANS: list = []  # worker jobs still blocked in a request when the window closed


def step_eta(records: list[dict], steps: int) -> float | None:
    """Seconds left, timed from the steps themselves: from the second step on, the time per step between the
    first and the last step (the setup before step 1 — fitting the taste, sampling, reference passes —
    is not a step's time); after one step, its elapsed time (an upper bound)."""
    timed = [r for r in records if isinstance(r.get("elapsed_s"), (int, float)) and isinstance(r.get("step"), int)]
    if not timed or not steps:
        return None
    first, last = timed[0], timed[-1]
    if last["step"] >= steps:
        return 0.0
    if last["step"] > first["step"]:
        per_step = (last["elapsed_s"] - first["elapsed_s"]) / (last["step"] - first["step"])
    elif last["step"] > 0:
        per_step = last["elapsed_s"] / last["step"]
    else:
        return None
    return max(0.0, per_step * (steps - last["step"]))


def job_phase(info: dict | None) -> str:
    """What a running job does before its first step, in words: the phase its process reports (taste tunes:
    fitting, sampling, the reference pass), else what such a job does first."""
    reported = (info or {}).get("phase")
    if isinstance(reported, dict) and isinstance(reported.get("phase"), str):
        return reported["phase"]
    kind, method = job_kind(info)
    if kind == api.TASTE_JOB_KIND and method == "dpo":
        return ("preparing: fitting your taste model on your picks, sampling fresh continuations for it to "
                "rank, then the original model's reference pass")
    if kind == api.TASTE_JOB_KIND:
        return "preparing: fitting your taste model on your picks, loading the model"
    return "preparing: loading the model and sampling the first group of completions"


# Seconds per completion token of one GRPO step (rollouts + update), from BENCHMARKS.md ("GRPO iteration"):
# the paper policy on a 2-vCPU host took 32–85 s per 64 × 256-token step (≈ 2–5 ms a token); the paper
# reports 15 s per step on an RTX 3090 (≈ 1 ms). Full-size MAA on a CPU adds ≈ 4 s per completion.
CPU_S_PER_TOKEN, GPU_S_PER_TOKEN, MAA_CPU_S_PER_COMPLETION = 0.003, 0.001, 4.0
JOB_SETUP_S = 60.0  # starting the job process and loading the model


def preset_seconds(values: dict, gpu: bool, needs_maa: bool) -> float:
    """A rough duration of a GRPO run with these option values (to choose a preset, not a promise: the
    job's own ETA, timed from its steps, replaces it once it runs)."""
    completions = int(values["prompts_per_step"]) * int(values["group"])
    step = completions * int(values["max_completion_tokens"]) * (GPU_S_PER_TOKEN if gpu else CPU_S_PER_TOKEN)
    if needs_maa and not gpu:
        step += completions * MAA_CPU_S_PER_COMPLETION
    return JOB_SETUP_S + int(values["steps"]) * step


def fmt_duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{max(1, round(seconds / 60))} min"


def fmt_eta(seconds) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def _num(v, digits=3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "—"


class TrainPanel(QDockWidget):
    status = Signal(str)

    def __init__(self, window) -> None:
        super().__init__("Train", window)
        self.setObjectName("trainPanel")
        self.win = window
        self.doc = window.document
        gen = getattr(window, "generate_panel", None)
        if gen is not None:
            self.host = gen.host  # one host per studio: the Generate panel's connection
        else:  # pragma: no cover - the studio always has the Generate panel
            from studio.generate.hostconn import HostConnection

            self.host = HostConnection(self)
        self.audition = Audition(window.transport, window.document, self)
        self.prompts: list[PromptClip] = []
        self.job_id: str | None = None
        self.job_info: dict | None = None
        self.job_state: str | None = None
        self._jobs: set = set()
        self._watcher: EventsWatcher | None = None
        self._pending = None
        self._status_busy = False
        self._steps_total = 0
        self._taste_sending = False  # a taste tune's picks are on their way to the host
        self._taste_method: str | None = None  # the method of the taste tune sent last
        self._listed_jobs: list[dict] = []  # the host's jobs as last listed (what a queued job waits for)
        self.records: list[dict] = []
        self.catalogue = local_catalogue()  # presets, rewards and options the host offers
        self._catalogue_from: str | None = None  # the host URL the catalogue came from
        self._maa_seen = "unknown"
        self._build_ui()
        self._poll = QTimer(self)
        self._poll.setInterval(3000)
        self._poll.timeout.connect(self.refresh_status)
        self.host.changed.connect(self._on_host_changed)
        self.doc.selection_changed.connect(self._sync_buttons)
        self.status.connect(window.show_message)
        self._fill_catalogue()
        self._preset_picked = False  # the musician chose a preset: a host's catalogue no longer replaces it
        self.apply_preset(self.default_preset())
        guard_wheel(self)
        compact_combos(self)
        self._on_host_changed()

    # ================================================================== UI
    def _build_ui(self) -> None:
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # rows wrap to the dock's width
        body = QWidget()
        scroll.setWidget(body)
        self.setWidget(scroll)
        v = QVBoxLayout(body)
        v.setContentsMargins(6, 6, 6, 6)

        # -- host + jobs on it
        self.host_label = QLabel("")
        self.host_label.setWordWrap(True)
        self.host_label.setStyleSheet(DIM)
        v.addWidget(self.host_label)
        row = QHBoxLayout()
        self.jobs_combo = QComboBox()
        self.jobs_combo.setToolTip("Training jobs on the host; pick one to follow it again. A remote host's jobs "
                                   "keep running when the studio closes; the local host's end with the studio "
                                   "(closing asks first).")
        self.jobs_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.jobs_combo.setMinimumContentsLength(12)
        self.jobs_combo.activated.connect(self._on_job_picked)
        self.btn_refresh = QPushButton("Refresh")
        self.btn_refresh.clicked.connect(self.refresh_jobs)
        row.addWidget(QLabel("Job:"))
        row.addWidget(self.jobs_combo, 1)
        row.addWidget(self.btn_refresh)
        v.addLayout(row)

        # -- run controls first: they never move when a setting below changes size
        grid = QGridLayout()
        self.btn_start = QPushButton("Start training")
        self.btn_start.clicked.connect(self.start)
        self.btn_pause = QPushButton("Pause")
        self.btn_pause.setToolTip("Stop after the current step (a checkpoint is saved); Resume continues")
        self.btn_pause.clicked.connect(lambda: self._control("pause"))
        self.btn_resume = QPushButton("Resume")
        self.btn_resume.clicked.connect(lambda: self._control("resume"))
        self.btn_cancel = QPushButton("Cancel")
        self.btn_cancel.setToolTip("Stop now; Resume continues from the last checkpoint")
        self.btn_cancel.clicked.connect(lambda: self._control("cancel"))
        for i, b in enumerate((self.btn_start, self.btn_pause, self.btn_resume, self.btn_cancel)):
            grid.addWidget(b, 0, i)
        grid.setColumnStretch(0, 2)
        for i in (1, 2, 3):
            grid.setColumnStretch(i, 1)
        v.addLayout(grid)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("")
        v.addWidget(self.progress)
        self.job_label = QLabel("No training job")
        self.job_label.setWordWrap(True)
        v.addWidget(self.job_label)

        # -- what to train with: reward and the MAA notice (where the eye is), then the preset's numbers
        box = QGroupBox("Settings")
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.WrapLongRows)
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip("Presets the host offers (paper: the SMART paper's settings, §3.5). "
                                     "Changing a value below keeps it.")
        self.preset_combo.activated.connect(self._on_preset_picked)
        form.addRow("Preset", self.preset_combo)
        self.preset_note = QLabel("")
        self.preset_note.setWordWrap(True)
        self.preset_note.setStyleSheet(DIM)
        form.addRow("", self.preset_note)
        self.reward_combo = QComboBox()
        self.reward_combo.setToolTip("What counts as better. MAA axes are Meta Audiobox Aesthetics ratings of the "
                                     "rendered audio (1–10). Offline rewards count notes symbolically: no MAA, for "
                                     "trying the loop only.")
        self.reward_combo.currentIndexChanged.connect(self._sync_reward)
        form.addRow("Reward", self.reward_combo)
        self.weights_edit = QLineEdit("maa-ce=1,maa-pq=0.5")
        self.weights_edit.setToolTip("Weighted MAA axes, e.g. maa-ce=1,maa-pq=0.5 (used with 'MAA weighted mix')")
        form.addRow("Weights", self.weights_edit)
        self.settings_form = form
        self.maa_label = QLabel("")
        self.maa_label.setWordWrap(True)
        self.btn_download = QPushButton(f"Download the MAA scoring model ({api.MAA_DOWNLOAD_BYTES / 1e6:.0f} MB)")
        self.btn_download.setToolTip("Fetch the Audiobox Aesthetics weights (the Generate panel shows progress)")
        self.btn_download.clicked.connect(self.download_maa)
        mrow = QVBoxLayout()
        mrow.addWidget(self.maa_label)
        mrow.addWidget(self.btn_download)
        form.addRow("", self._wrap(mrow))
        self.spin_steps = QSpinBox()
        self.spin_steps.setRange(1, api.MAX_STEPS)
        self.spin_steps.setToolTip("Training iterations. Each one generates, scores and learns from a batch.")
        form.addRow("Steps", self.spin_steps)
        self.spin_prompts = QSpinBox()
        self.spin_prompts.setRange(1, api.MAX_PROMPTS_PER_STEP)
        self.spin_prompts.setToolTip("Prompts drawn per step (with replacement from the list above)")
        form.addRow("Prompts per step", self.spin_prompts)
        self.spin_group = QSpinBox()
        self.spin_group.setRange(2, api.MAX_GROUP)
        self.spin_group.setToolTip("Continuations per prompt. They are compared with each other: the ones scoring "
                                   "above their group's average are reinforced.")
        form.addRow("Group size", self.spin_group)
        self.spin_tokens = QSpinBox()
        self.spin_tokens.setRange(8, 4096)
        self.spin_tokens.setToolTip("Longest continuation in tokens (about 4 tokens per note)")
        form.addRow("Max length (tokens)", self.spin_tokens)
        self.spin_beta = QDoubleSpinBox()
        self.spin_beta.setDecimals(3)
        self.spin_beta.setRange(0.0, 10.0)
        self.spin_beta.setSingleStep(0.01)
        self.spin_beta.setToolTip("β: how far the tuned model may drift from the original; 0 = no limit")
        form.addRow("β (stay close)", self.spin_beta)
        self.spin_lr = QDoubleSpinBox()
        self.spin_lr.setDecimals(6)
        self.spin_lr.setRange(1e-6, 0.5)
        self.spin_lr.setSingleStep(1e-5)
        self.spin_lr.setToolTip("Learning rate: how big each update is (decays linearly to 0)")
        form.addRow("Learning rate", self.spin_lr)
        drow = QHBoxLayout()
        self.chk_diversity = QCheckBox("on, at")
        self.spin_diversity = QDoubleSpinBox()
        self.spin_diversity.setRange(0.05, 0.95)
        self.spin_diversity.setSingleStep(0.05)
        self.spin_diversity.setValue(0.5)
        self.spin_diversity.setToolTip("A fraction of the starting diversity")
        self.chk_diversity.setToolTip("Stop when outputs get this much less varied than at the start "
                                      "(the final model is the best one above the floor)")
        drow.addWidget(self.chk_diversity)
        drow.addWidget(self.spin_diversity)
        drow.addWidget(QLabel("× start"))
        drow.addStretch(1)
        form.addRow("Diversity floor", self._wrap(drow))
        self.spin_save = QSpinBox()
        self.spin_save.setRange(1, 10000)
        self.spin_save.setValue(50)
        self.spin_save.setToolTip("A checkpoint (a model you can use or compare) every N steps; pause always "
                                  "writes one, cancel and crashes resume from the last one")
        form.addRow("Checkpoint every", self.spin_save)
        for w in (self.spin_prompts, self.spin_group):
            w.valueChanged.connect(self._sync_counts)
        v.addWidget(box)

        # -- prompts
        box = QGroupBox("Prompts — what the model learns to continue")
        pv = QVBoxLayout(box)
        self.prompt_list = QListWidget()
        self.prompt_list.setMaximumHeight(90)
        self.prompt_list.setToolTip("Each prompt is a few bars of your sketch; the model continues it, the "
                                    "continuations are rendered and scored, and the better ones are reinforced.")
        pv.addWidget(self.prompt_list)
        row = QHBoxLayout()
        self.btn_add_selection = QPushButton("Add selection")
        self.btn_add_selection.setToolTip("The bars of the selected notes become a prompt")
        self.btn_add_selection.clicked.connect(self.add_selection)
        self.btn_add_loop = QPushButton("Add loop region")
        self.btn_add_loop.setToolTip("The notes inside the loop region become a prompt")
        self.btn_add_loop.clicked.connect(self.add_loop_region)
        self.btn_remove_prompt = QPushButton("Remove")
        self.btn_remove_prompt.clicked.connect(self.remove_prompt)
        for b in (self.btn_add_selection, self.btn_add_loop, self.btn_remove_prompt):
            row.addWidget(b)
        pv.addLayout(row)
        row = QHBoxLayout()
        self.chk_procedural = QCheckBox("Mix in procedural prompts:")
        self.chk_procedural.setToolTip("Random meter and tempo with a first note (the paper's prompts), alongside "
                                       "yours: keeps the model general while it learns your material.")
        self.spin_procedural = QSpinBox()
        self.spin_procedural.setRange(1, 64)
        self.spin_procedural.setValue(4)
        self.chk_procedural.toggled.connect(self._sync_counts)
        self.spin_procedural.valueChanged.connect(self._sync_counts)
        row.addWidget(self.chk_procedural)
        row.addWidget(self.spin_procedural)
        row.addStretch(1)
        pv.addLayout(row)
        self.counts_label = QLabel("")
        self.counts_label.setWordWrap(True)
        self.counts_label.setStyleSheet(DIM)
        pv.addWidget(self.counts_label)
        v.addWidget(box)

        # -- tune toward the musician's own picks (the Generate panel's taste profile)
        self.taste_section = TasteTuneSection(getattr(self.win, "taste_store", None))
        self.taste_section.requested.connect(self.tune_taste)
        v.addWidget(self.taste_section)

        # -- plots
        self.plots = TrainingPlots()
        self.plots.setFixedHeight(380)
        v.addWidget(self.plots)

        # -- checkpoints
        box = QGroupBox("Checkpoints")
        cv = QVBoxLayout(box)
        self.ckpt_table = QTableWidget(0, 3)
        self.ckpt_table.setHorizontalHeaderLabels(["Step", "Reward", "Diversity"])
        self.ckpt_table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.ckpt_table.verticalHeader().hide()
        self.ckpt_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.ckpt_table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.ckpt_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.ckpt_table.setMaximumHeight(130)
        self.ckpt_table.itemSelectionChanged.connect(self._sync_buttons)
        cv.addWidget(self.ckpt_table)
        row = QHBoxLayout()
        self.btn_use = QPushButton("Use this checkpoint")
        self.btn_use.setToolTip("Generate with this checkpoint (the host switches its active model)")
        self.btn_use.clicked.connect(self.use_checkpoint)
        self.btn_compare = QPushButton("Compare blind…")
        self.btn_compare.setToolTip("The same prompts continued by the original and the tuned model, played in "
                                    "random order without labels: you pick, your choices are saved.")
        self.btn_compare.clicked.connect(self.compare)
        row.addWidget(self.btn_use)
        row.addWidget(self.btn_compare)
        cv.addLayout(row)
        v.addWidget(box)

        # -- blind A/B
        self.ab = BlindAB(self.win, self.audition)
        self.ab.chosen.connect(self._log)
        v.addWidget(self.ab)

        # -- log
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setMaximumHeight(110)
        v.addWidget(self.log_view)
        v.addStretch(1)

    @staticmethod
    def _wrap(layout) -> QWidget:
        w = QWidget()
        layout.setContentsMargins(0, 0, 0, 0)
        w.setLayout(layout)
        return w

    # ================================================================== presets and rewards (the host's)
    def _fill_catalogue(self) -> None:
        """Fill the preset and reward lists from `self.catalogue` (a /v1/train/options body)."""
        cat = self.catalogue
        current_preset = self.preset_combo.currentData()
        current_reward = self.reward_combo.currentData()
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        for name, p in cat["presets"].items():
            self.preset_combo.addItem(name, name)
            self.preset_combo.setItemData(self.preset_combo.count() - 1,
                                          f"{p['description']} · {self.preset_time(name)}", Qt.ToolTipRole)
        i = self.preset_combo.findData(current_preset)
        self.preset_combo.setCurrentIndex(max(0, i))
        self.preset_combo.blockSignals(False)
        self.reward_combo.blockSignals(True)
        self.reward_combo.clear()
        self._needs_maa = {WEIGHTED: True}
        for r in cat["rewards"]:
            label = r["description"][:1].upper() + r["description"][1:]
            self.reward_combo.addItem(label, r["name"])
            self._needs_maa[r["name"]] = bool(r["needs_maa"])
        self.reward_combo.addItem("MAA weighted mix (Weights below)", WEIGHTED)
        i = self.reward_combo.findData(api.canonical_reward(current_reward) if current_reward else None)
        self.reward_combo.setCurrentIndex(max(0, i))
        self.reward_combo.blockSignals(False)
        self._grey_out_rewards()
        self._sync_reward()

    def _grey_out_rewards(self) -> None:
        """Rewards the host cannot compute (MAA ones without MAA weights) are shown but not pickable."""
        missing = self.host.maa_status() == "missing"
        model = self.reward_combo.model()
        if not isinstance(model, QStandardItemModel):
            return
        for i in range(self.reward_combo.count()):
            item = model.item(i)
            needs = self._needs_maa.get(self.reward_combo.itemData(i), False)
            item.setEnabled(not (needs and missing))
            item.setToolTip("Needs the MAA scoring model on the host (not installed)" if needs and missing else "")

    def _first_offline_reward(self) -> str | None:
        return next((self.reward_combo.itemData(i) for i in range(self.reward_combo.count())
                     if not self._needs_maa.get(self.reward_combo.itemData(i), False)), None)

    def host_has_gpu(self) -> bool:
        """Whether the host trains on a GPU: as its catalogue says; before it has, the local host is CPU."""
        cuda = self.catalogue.get("cuda")
        return bool(cuda) if cuda is not None else self.host.mode != LOCAL

    def default_preset(self) -> str:
        """The paper's run on a GPU host; on a CPU host one that finishes in minutes (the paper's takes hours
        there, days with MAA)."""
        presets = self.catalogue["presets"]
        if self.host_has_gpu() and "paper" in presets:
            return "paper"
        cpu_fit = min(presets, key=lambda n: abs(preset_seconds(preset_values(self.catalogue, n), False, False) - 300))
        return "quick" if "quick" in presets else cpu_fit

    def _on_preset_picked(self, _index: int) -> None:
        self._preset_picked = True
        self.apply_preset(self.preset_combo.currentData())

    def preset_time(self, name: str) -> str:
        """How long preset `name` takes on this host, estimated (see preset_seconds), in words."""
        values = preset_values(self.catalogue, name)
        reward = api.canonical_reward(values["reward"])
        needs_maa = any(r["name"] == reward and r["needs_maa"] for r in self.catalogue["rewards"])
        seconds = preset_seconds(values, self.host_has_gpu(), needs_maa)
        return f"≈ {fmt_duration(seconds)} on this host ({'GPU' if self.host_has_gpu() else 'CPU'}, estimated)"

    def apply_preset(self, name: str) -> None:
        """Fill the settings with the host's preset `name` (the defaults plus the preset's changes)."""
        p = preset_values(self.catalogue, name)
        self.preset_combo.setCurrentIndex(self.preset_combo.findData(name))
        self.preset_note.setText(f"{self.catalogue['presets'][name]['description']} · {self.preset_time(name)}")
        self.spin_steps.setValue(p["steps"])
        self.spin_prompts.setValue(p["prompts_per_step"])
        self.spin_group.setValue(p["group"])
        self.spin_tokens.setValue(p["max_completion_tokens"])
        self.spin_beta.setValue(p["beta"])
        self.spin_lr.setValue(p["lr"])
        if p.get("save_every"):
            self.spin_save.setValue(p["save_every"])
        reward = api.canonical_reward(p["reward"])
        if self._needs_maa.get(reward) and self.host.maa_status() == "missing":
            reward = self._first_offline_reward() or reward  # default to what works on this host
        self.reward_combo.setCurrentIndex(self.reward_combo.findData(reward))
        self._sync_reward()
        self._sync_counts()

    def reward_spec(self) -> str:
        spec = self.reward_combo.currentData()
        return self.weights_edit.text().strip() if spec == WEIGHTED else spec

    def reward_needs_maa(self) -> bool:
        return self._needs_maa.get(self.reward_combo.currentData(), False)

    def options(self) -> dict:
        """The /v1/train body (option names of engine.api.GRPOOptions), prompts excluded."""
        opts = {"preset": self.preset_combo.currentData() or "paper", "reward": self.reward_spec(),
                "steps": self.spin_steps.value(), "prompts_per_step": self.spin_prompts.value(),
                "group": self.spin_group.value(), "max_completion_tokens": self.spin_tokens.value(),
                "beta": round(self.spin_beta.value(), 6), "lr": float(self.spin_lr.value()),
                "save_every": self.spin_save.value()}
        if self.chk_diversity.isChecked():
            opts["min_diversity"] = round(self.spin_diversity.value(), 3)
        if self.reward_needs_maa() and self.host.maa_status() == "random-weights":
            opts["maa_random"] = True  # a host without real weights: the job's scores are flagged random
        if self.host.connected and self.host.device() == "cpu":
            opts["cpu_threads"] = 1  # shares the CPU with the host; one thread is fastest on a busy machine
        return opts

    def _sync_reward(self, *_args) -> None:
        weighted = self.reward_combo.currentData() == WEIGHTED
        self.weights_edit.setEnabled(weighted)  # always shown: nothing below moves when the reward changes
        status = self.host.maa_status()
        if not self.reward_needs_maa():
            text, style = ("Offline reward, no MAA: it counts notes symbolically and says nothing about how "
                           "the music sounds — for trying the training loop.", DIM)
        elif status == "available":
            text, style = "MAA weights available on the host.", OK
        elif status == "random-weights":
            text, style = ("The host has only random-weight MAA: the job runs, but its scores are NOT aesthetic "
                           "ratings (plumbing test only).", WARN)
        elif status == "missing":
            text, style = ("This reward listens with the MAA scoring model, which is not installed on the host: "
                           "download it, or pick an offline reward (no MAA).", WARN)
        else:
            text, style = "Whether MAA rewards are available is known once the host is running.", DIM
        self.maa_label.setText(text)
        self.maa_label.setStyleSheet(style)
        self.btn_download.setVisible(self.reward_needs_maa() and status == "missing")
        self._set_reward_title()
        self._sync_buttons()

    def download_maa(self) -> None:
        """The Generate panel's MAA download (it shows the progress and restarts the local host with the
        weights); the label here follows the host's MAA status."""
        gen = getattr(self.win, "generate_panel", None)
        if gen is None:
            self.status.emit("MAA weights: pass --maa to `smart serve`")
            return
        gen.show()
        gen.raise_()
        gen.download_maa()
        self.maa_label.setText("Downloading the MAA scoring model — progress in the Generate panel…")
        self.maa_label.setStyleSheet(DIM)

    def _set_reward_title(self) -> None:
        cfg = (self.job_info or {}).get("config") or {}
        kind, method = job_kind(self.job_info)
        if kind == api.TASTE_JOB_KIND:
            self.plots.set_reward_title("Tune toward my taste — DPO on your picks and taste-ranked samples"
                                        if method == "dpo" else "Reward — your taste model's score")
            return
        spec = cfg.get("reward") or self.reward_spec() or ""
        note = ""
        try:
            names = [name for name, _w in api.parse_reward_spec(spec)]
        except Exception:  # noqa: BLE001 - a half-typed weights spec: no note
            names = []
        if names and not any(self._needs_maa.get(n, n.startswith("maa-")) for n in names):
            note = " (offline, no MAA)"
        elif cfg.get("maa_random") or any(r.get("maa_random") for r in self.records[-1:]):
            note = " (random-weight MAA: not real scores)"
        self.plots.set_reward_title(f"Reward — {spec}{note}")

    def _sync_counts(self, *_args) -> None:
        n_user = len(self.prompts)
        n_proc = self.spin_procedural.value() if self.chk_procedural.isChecked() else 0
        per = self.spin_prompts.value() * self.spin_group.value()
        if n_user:
            src = f"{n_user} of yours" + (f" + {n_proc} procedural" if n_proc else "")
        else:
            src = "procedural prompts (random meter and tempo, as in the paper)"
        self.counts_label.setText(f"Prompts: {src}. Each step: {self.spin_prompts.value()} prompts × "
                                  f"{self.spin_group.value()} continuations = {per} completions.")

    # ================================================================== prompts
    def add_selection(self) -> None:
        sel = self.doc.selected_notes()
        if not sel:
            self.status.emit("Select some notes first")
            return
        self._add_prompt(prompt_from_notes(self.doc.clip, sel, f"Selection {len(self.prompts) + 1}"))

    def add_loop_region(self) -> None:
        tr = self.win.transport
        loop = getattr(tr, "loop", None)
        if not loop or loop[1] <= loop[0]:
            self.status.emit("Set a loop region first")
            return
        self._add_prompt(prompt_from_region(self.doc.clip, int(loop[0]), int(loop[1]),
                                            f"Region {len(self.prompts) + 1}"))

    def _add_prompt(self, prompt: PromptClip | None) -> None:
        if prompt is None:
            self.status.emit("No notes there to use as a prompt")
            return
        self.prompts.append(prompt)
        self.prompt_list.addItem(prompt.describe())
        self._sync_counts()
        self._sync_buttons()

    def remove_prompt(self) -> None:
        row = self.prompt_list.currentRow()
        if 0 <= row < len(self.prompts):
            del self.prompts[row]
            self.prompt_list.takeItem(row)
        self._sync_counts()
        self._sync_buttons()

    # ================================================================== host
    def _on_host_changed(self) -> None:
        self.host_label.setText(self.host.describe())
        status = self.host.maa_status()
        if self.host.connected and self._catalogue_from != self.host.client.url:
            self._catalogue_from = self.host.client.url
            self._run("Reading the host's training options", self.host.client.train_options, self._on_catalogue,
                      self._on_catalogue_failed)
        self._grey_out_rewards()
        if status == "missing" and self._maa_seen != "missing" and self.reward_needs_maa():
            offline = self._first_offline_reward()
            if offline is not None:  # default to what works here, and say so
                self.reward_combo.setCurrentIndex(self.reward_combo.findData(offline))
                self._log("The host has no MAA scoring model: the reward is now an offline one "
                          f"({self.reward_combo.currentText()}).")
        self._maa_seen = status
        self._sync_reward()
        if self.host.connected:
            if self._pending is not None:
                action, self._pending = self._pending, None
                action()
            self.refresh_jobs()
        elif self.host.state == "failed":
            self._pending = None
        self._sync_buttons()

    def _on_catalogue(self, catalogue: dict) -> None:
        """The connected host's presets and rewards replace the ones shown so far."""
        self.catalogue = catalogue
        self._fill_catalogue()
        if not self._preset_picked and self.default_preset() != self.preset_combo.currentData():
            self.apply_preset(self.default_preset())  # what this host can do (a GPU host: the paper's run)

    def _on_catalogue_failed(self, reason: str) -> None:
        self._log(f"The host did not list its training options ({reason}); showing this studio's own.")

    def _ensure_host(self, action) -> bool:
        if self.host.connected:
            return True
        self._pending = action
        if not self.host.busy:
            self.host.connect_host()
        self._log("Connecting to the host…")
        return False

    def _run(self, name: str, fn, on_result=None, on_failed=None) -> CallJob:
        """Run `fn` on a worker thread; the callbacks run on the UI thread (bound slots, queued)."""
        job = CallJob(name, fn)
        job.callbacks = (name, on_result, on_failed)
        job.result.connect(self._on_call_result)
        job.failed.connect(self._on_call_failed)
        self._track(job)
        job.start()
        return job

    def _track(self, job) -> None:
        job.finished_job.connect(self._on_job_finished)
        self._jobs.add(job)

    def _on_call_result(self, value) -> None:
        job = self.sender()
        _name, on_result, _on_failed = getattr(job, "callbacks", (None, None, None))
        if on_result is not None:
            on_result(value)

    def _on_call_failed(self, reason: str) -> None:
        job = self.sender()
        name, _on_result, on_failed = getattr(job, "callbacks", ("Request", None, None))
        if on_failed is not None:
            on_failed(reason)
        else:
            self._error(name, reason)

    def _on_job_finished(self) -> None:
        job = self.sender()
        if job is None:
            return
        job.wait(2000)  # its thread is quitting: never drop a QThread that still runs
        self._jobs.discard(job)
        if job is self._watcher:
            self._watcher = None
        if isinstance(job, CompareJob):
            self._sync_buttons()

    def _error(self, what: str, reason: str) -> None:
        self._log(f"{what} failed: {reason}")
        self.job_label.setText(f"{what} failed: {reason}")
        self.job_label.setStyleSheet(WARN)
        self.status.emit(f"Train: {reason}")
        self._sync_buttons()

    def _log(self, text: str) -> None:
        self.log_view.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    # ================================================================== job list
    def refresh_jobs(self) -> None:
        if not self.host.connected:
            return
        client = self.host.client
        self._run("Listing jobs", client.list_jobs, self._fill_jobs)

    def _fill_jobs(self, jobs: list[dict]) -> None:
        self._listed_jobs = list(jobs)
        self.jobs_combo.clear()
        for j in reversed(jobs):  # newest first
            p = j.get("progress") or {}
            self.jobs_combo.addItem(f"{j['id']} · {j['state']} · {j.get('reward')} · step {p.get('step', 0)}/"
                                    f"{p.get('steps', '?')}", j["id"])
        if self.job_id is not None:
            i = self.jobs_combo.findData(self.job_id)
            if i >= 0:
                self.jobs_combo.setCurrentIndex(i)
        elif jobs:
            running = [j for j in jobs if j["state"] in ACTIVE]
            if running:  # a job started earlier (or before a restart) is still going: follow it
                self.attach(running[0]["id"])

    def _on_job_picked(self, index: int) -> None:
        job_id = self.jobs_combo.itemData(index)
        if job_id and job_id != self.job_id:
            self.attach(job_id)

    # ================================================================== start / follow
    def start(self) -> None:
        if self.job_state in ACTIVE:
            self.status.emit("A job is already running (pause or cancel it first)")
            return
        if self.reward_needs_maa() and self.host.maa_status() == "missing":
            self._error("Start", "MAA weights are not installed on the host, so this reward cannot be computed: "
                                 "pick an offline reward, or download the MAA scoring model")
            return
        if not self._ensure_host(self.start):
            return
        options = self.options()
        midi = [p.midi() for p in self.prompts] or None
        if midi and self.chk_procedural.isChecked():
            options["procedural_prompts"] = self.spin_procedural.value()
        options["name"] = f"{self.win._display_name()} · {options['reward']}" if hasattr(self.win, "_display_name") \
            else options["reward"]
        client = self.host.client
        self.btn_start.setEnabled(False)
        self._log(f"Starting: reward {options['reward']}, {options['steps']} steps, {options['prompts_per_step']}×"
                  f"{options['group']} completions per step, β {options['beta']}, lr {options['lr']:g}"
                  + (f", {len(midi)} prompt(s) from the sketch" if midi else ", procedural prompts"))
        self._run("Starting the job", lambda: client.start_training(options, prompts_midi=midi), self._on_started)

    def tune_taste(self, options: dict | None = None) -> None:
        """Send the profile's picks to the host as a taste-tuning job and follow it."""
        if self.job_state in ACTIVE:
            self.status.emit("A job is already running (pause or cancel it first)")
            return
        profile = self.taste_section.profile_dir
        if profile is None:
            return
        options = dict(options if options is not None else self.taste_section.options())
        if not self._ensure_host(lambda: self.tune_taste(options)):
            return
        if self.host.device() == "cpu":
            options["cpu_threads"] = 1  # shares the CPU with the host; one thread is fastest on a busy machine
        limit = ((self.host.health or {}).get("limits") or {}).get("body_bytes") or api.DEFAULT_MAX_BODY_BYTES
        client, store = self.host.client, self.taste_section.store
        name = (f"{self.win._display_name()} · " if hasattr(self.win, "_display_name") else "") + \
            f"my taste ({options['method']})"

        def submit():  # a worker: waits for picks still being written, reads the MIDI files, sends them
            store.wait()
            pairs, dropped = collect_pairs(profile, limit)
            return client.start_taste_tune(pairs, options, name=name), len(pairs), dropped

        self._taste_sending = True
        self._taste_method = options.get("method")
        self._sync_buttons()
        self._log(f"Tune toward my taste: {options['method']}, "
                  f"{options.get('steps', 'default')} steps, picks from {profile}")
        self._run("Starting the taste tune", submit, self._on_taste_started, self._on_taste_failed)

    def _on_taste_started(self, value) -> None:
        job_id, sent, dropped = value
        self._log(f"Job {job_id} queued on the host: {sent} picks sent"
                  + (f" ({dropped} oldest left out: the host's request size limit)" if dropped else ""))
        self._taste_sending = False
        self.attach(job_id)
        if self._taste_method == "dpo":
            self.plots.set_layout("dpo")  # its own curves from the start, not a GRPO job's empty axes
        self.refresh_jobs()

    def _on_taste_failed(self, reason: str) -> None:
        self._taste_sending = False
        self._error("Tune toward my taste", reason)

    def _on_started(self, job_id: str) -> None:
        self._log(f"Job {job_id} queued on the host")
        self.attach(job_id)
        self.refresh_jobs()

    def attach(self, job_id: str) -> None:
        """Follow a job: its events replay from the first step, then stream live."""
        self._stop_watching()
        self.job_id, self.job_info, self.job_state = job_id, None, None
        self._steps_total = 0
        self.records.clear()
        self.plots.clear()
        self.plots.set_layout("grpo")  # until the job says it is a DPO taste tune
        self.ckpt_table.setRowCount(0)
        self.job_label.setStyleSheet("")
        self._watch()
        self.refresh_status()
        self._poll.start()

    def _watch(self) -> None:
        if not self.host.connected or self.job_id is None:
            return
        self._stop_watching()
        self.records.clear()
        self.plots.clear()
        watcher = EventsWatcher(self.host.client, self.job_id)
        watcher.event.connect(self._on_event)
        watcher.done.connect(self._on_done)
        watcher.failed.connect(self._on_watch_failed)
        self._track(watcher)
        self._watcher = watcher
        watcher.start()

    def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def _on_event(self, ev: dict) -> None:
        if self.sender() is not self._watcher:
            return
        if ev.get("event") == "state":
            self.job_state = ev.get("state")
            self._log(f"Job {ev.get('job')}: {self.job_state}")
            self._show_progress()
            self.refresh_jobs()
            self._sync_buttons()
            return
        if "step" not in ev:
            return
        self.records.append(ev)
        if is_dpo_record(ev):
            self.plots.set_layout("dpo")
        self.plots.add(ev)
        if ev.get("steps_total"):
            self._steps_total = int(ev["steps_total"])
        if is_dpo_record(ev):
            self._log(describe_taste_record(ev))
            self._show_progress()
            self.refresh_status()
            return
        if ev.get("maa_random"):
            self._set_reward_title()
        parts = [f"step {ev['step']}", f"reward {_num(ev.get('reward_mean'))}"]
        for axis in AXES:
            if axis in ev:
                parts.append(f"{axis} {_num(ev[axis], 2)}")
        parts += [f"KL {_num(ev.get('kl'), 4)}", f"diversity {_num(ev.get('diversity'))}",
                  f"{_num(ev.get('completion_tokens'), 0)} tokens"]
        if ev.get("guard"):
            parts.append("diversity floor reached")
        self._log(" · ".join(parts))
        self._show_progress()
        self.refresh_status()  # new checkpoints show up in the table (one request at a time)

    def _on_done(self, ev: dict) -> None:
        if self.sender() is not self._watcher:
            return
        self.job_state = ev.get("state")
        self._watcher = None
        result = ev.get("result") or {}
        msg = f"Job {ev.get('job')} {self.job_state}"
        if ev.get("error"):
            msg += f": {ev['error']}"
        elif result.get("steps_done") is not None:
            msg += f" after {result['steps_done']} steps"
        self._log(msg)
        self.status.emit(msg)
        self._show_checkpoints(ev.get("checkpoints") or [])
        self.refresh_status()
        self.refresh_jobs()

    def refresh_status(self) -> None:
        if not self.host.connected or self.job_id is None or self._status_busy:
            return
        self._status_busy = True
        client, job_id = self.host.client, self.job_id

        def done(info):
            self._status_busy = False
            if info.get("id") != self.job_id:
                return
            self.job_info = info
            self.job_state = info["state"]
            self._steps_total = int(info.get("steps") or 0) or self._steps_total
            kind, method = job_kind(info)
            if kind == api.TASTE_JOB_KIND and method == "dpo":
                self.plots.set_layout("dpo")
            self._show_progress()
            self._show_checkpoints(info.get("checkpoints") or [])
            self._set_reward_title()
            if self.job_state not in ACTIVE:
                self._poll.stop()
            self._sync_buttons()

        def failed(reason):
            self._status_busy = False
            self._log(f"Status: {reason}")

        self._run("Job status", lambda: client.job(job_id), done, failed)

    def _show_progress(self) -> None:
        info = self.job_info or {}
        steps = self._steps_total or int(info.get("steps") or 0)
        step = self.records[-1]["step"] if self.records else (info.get("progress") or {}).get("step", 0)
        state = self.job_state or info.get("state") or "?"
        preparing = state == "running" and not self.records
        if preparing:
            self.progress.setRange(0, 0)  # busy: the job works before its first step (see job_phase)
        else:
            self.progress.setRange(0, 1000)
        if steps and not preparing:
            self.progress.setValue(int(1000 * min(1.0, step / steps)))
            self.progress.setFormat(f"step {step} / {steps}")
        eta = step_eta(self.records, steps) if state == "running" else None
        if eta is None and state == "running" and not preparing:
            eta = info.get("eta_s")
        text = f"Job {self.job_id}: {state}"
        if state == "queued":
            text += self._queue_reason(info)
        if preparing:
            started = info.get("started")
            so_far = (f", {fmt_eta(time.time() - started)} so far"
                      if isinstance(started, (int, float)) and time.time() >= started else "")
            text += f" · {job_phase(info)}{so_far} · ETA once the first step is timed"
        elif state == "running":
            text += f" · step {step} of {steps or '?'} · ETA {fmt_eta(eta)}"
        if job_kind(info)[0] == api.TASTE_JOB_KIND and state in ("paused", "cancelled", "failed"):
            text += " · a taste tune cannot continue mid-run: Resume starts over from the original model"
        if info.get("error"):
            text += f" — {info['error']}"
        self.job_label.setText(text)
        self.job_label.setStyleSheet(WARN if state == "failed" else "")

    def _queue_reason(self, info: dict) -> str:
        """Why a queued job waits: the host runs one training job at a time; name the one ahead of it."""
        ahead = [j for j in self._listed_jobs if j.get("state") == "running" and j.get("id") != self.job_id]
        where = f"position {info['queue_position']} in the queue" if info.get("queue_position") else "in the queue"
        if not ahead:
            return f" ({where})"
        job = ahead[0]
        p = job.get("progress") or {}
        name = job.get("name") or job.get("reward") or "a job"
        return (f" ({where}: the host trains one job at a time, and job {job['id']} ({name}, step "
                f"{p.get('step', 0)}/{p.get('steps', '?')}) is running — pause or cancel it to start this one)")

    def running_local_job(self) -> str | None:
        """A job running or queued on the studio's own local host, as a line for the close question; None
        when there is none (a remote host's jobs go on without the studio)."""
        if self.host.mode != LOCAL or not self.host.connected:
            return None
        active = [j for j in self._listed_jobs if j.get("state") in ACTIVE]
        if self.job_id is not None and self.job_state in ACTIVE and not any(j.get("id") == self.job_id
                                                                             for j in active):
            active.insert(0, {"id": self.job_id, "state": self.job_state, **(self.job_info or {})})
        if not active:
            return None
        job = active[0]
        p = job.get("progress") or {}
        more = f" and {len(active) - 1} more" if len(active) > 1 else ""
        return (f"job {job['id']} ({job.get('name') or job.get('reward') or 'training'}, {job.get('state')}, "
                f"step {p.get('step', 0)}/{p.get('steps', '?')}){more}")

    def stop_local_jobs(self, then) -> None:
        """Cancel the local host's active jobs (so that the next start does not run them again), then call
        `then()` — on the UI thread, once the host has answered or failed to."""
        ids = [j["id"] for j in self._listed_jobs if j.get("state") in ACTIVE]
        if self.job_id is not None and self.job_state in ACTIVE and self.job_id not in ids:
            ids.append(self.job_id)
        if not ids or not self.host.connected:
            then()
            return
        client = self.host.client

        def cancel_all():
            for job_id in ids:
                client.cancel_job(job_id)

        self._log(f"Stopping {', '.join(ids)}: the studio is closing")
        self._run("Stopping the job", cancel_all, lambda _r: then(), lambda _reason: then())

    def _show_checkpoints(self, ckpts: list[dict]) -> None:
        current = self.selected_checkpoint()
        final = (self.job_info or {}).get("final_model")
        rows = [dict(c) for c in ckpts]
        if final:
            rows.append({"step": "final", "path": final, "reward_mean": None, "diversity": None})
        if [r["path"] for r in rows] == [self.ckpt_table.item(i, 0).data(Qt.UserRole)
                                         for i in range(self.ckpt_table.rowCount())]:
            return
        self.ckpt_table.setRowCount(len(rows))
        for i, c in enumerate(rows):
            for col, text in enumerate((str(c["step"]), _num(c.get("reward_mean")), _num(c.get("diversity")))):
                item = QTableWidgetItem(text)
                item.setData(Qt.UserRole, c["path"])
                item.setToolTip(c["path"])
                self.ckpt_table.setItem(i, col, item)
            if c["path"] == current:
                self.ckpt_table.selectRow(i)
        self._sync_buttons()

    def selected_checkpoint(self) -> str | None:
        rows = self.ckpt_table.selectionModel().selectedRows() if self.ckpt_table.selectionModel() else []
        if not rows:
            return None
        item = self.ckpt_table.item(rows[0].row(), 0)
        return item.data(Qt.UserRole) if item is not None else None

    # ================================================================== pause / resume / cancel
    def _control(self, action: str) -> None:
        if self.job_id is None or not self.host.connected:
            return
        client, job_id = self.host.client, self.job_id
        fn = {"pause": client.pause_job, "resume": client.resume_job, "cancel": client.cancel_job}[action]
        self._log(f"{action.capitalize()} requested")

        def done(info):
            self.job_state = info.get("state", self.job_state)
            if action == "resume":
                self._watch()  # the previous stream ended with the pause/cancel: follow the new run
                self._poll.start()
            self.refresh_status()
            self._sync_buttons()

        self._run(action.capitalize(), lambda: fn(job_id), done)

    # ================================================================== checkpoints
    def use_checkpoint(self) -> None:
        path = self.selected_checkpoint()
        if path is None or not self.host.connected:
            return
        client = self.host.client

        def done(result):
            self._log(f"Generating with {path}")
            self.status.emit(f"Generating with checkpoint {Path(path).name}")
            self.host.refresh_health()  # the Generate panel shows the model in use

        self._run("Activating the checkpoint", lambda: client.activate(path), done)

    def compare(self) -> None:
        tuned = self.selected_checkpoint()
        cfg = (self.job_info or {}).get("config") or {}
        base = cfg.get("model")
        if tuned is None or not base or not self.host.connected:
            self.status.emit("Pick a checkpoint of a job first")
            return
        prompts = [p.midi() for p in self.prompts[:MAX_COMPARE_PROMPTS]] or [None] * 3
        profile = self.taste_section.profile_dir
        if not self.prompts and profile is not None and job_kind(self.job_info)[0] == api.TASTE_JOB_KIND:
            # A taste tune is judged at the musician's own prompts (read on the worker).
            prompts = lambda: pair_prompts(profile, 3)  # noqa: E731
        restore = ((self.host.health or {}).get("model") or {}).get("path")
        job = CompareJob(self.host.client, base, tuned, prompts, bars=2, seed=random.randrange(1, 2**30),
                         restore=restore)
        job.progress.connect(self._on_compare_progress)
        job.result.connect(self._on_pairs)
        job.failed.connect(self._on_compare_failed)
        self._track(job)
        self.ab.say("Generating continuations with both models…")
        self.btn_compare.setEnabled(False)
        job.start()

    def _on_compare_progress(self, text: str, fraction: float) -> None:
        self.ab.say(f"{text} ({fraction:.0%})")

    def _on_compare_failed(self, reason: str) -> None:
        self.ab.say(f"Compare failed: {reason}")
        self._error("Compare", reason)

    def _on_watch_failed(self, reason: str) -> None:
        if self.sender() is self._watcher:
            self._error("Following the job", reason)

    def _on_pairs(self, pairs: list[dict]) -> None:
        job = self.sender()
        self.ab.set_pairs(pairs, job.base, job.tuned, self.job_id)
        self._sync_buttons()

    # ================================================================== state
    def _sync_buttons(self, *_args) -> None:
        running = self.job_state in ACTIVE
        connected = self.host.connected
        blocked = self.reward_needs_maa() and self.host.maa_status() == "missing"
        self.btn_start.setEnabled(not running and not self.host.busy and not blocked)
        self.btn_start.setToolTip("This reward needs the MAA scoring model, which the host does not have"
                                  if blocked else "Start a GRPO job on the host with these settings")
        self.btn_pause.setEnabled(connected and running)
        self.btn_cancel.setEnabled(connected and self.job_state in ("queued", "running", "paused"))
        stopped = self.job_state in ("paused", "cancelled", "failed")
        # A GRPO job resumes from its last checkpoint: with none there is nothing to resume (a taste tune
        # starts over anyway, and says so).
        no_checkpoint = (stopped and job_kind(self.job_info)[0] != api.TASTE_JOB_KIND
                         and not (self.job_info or {}).get("checkpoints") and self.ckpt_table.rowCount() == 0)
        self.btn_resume.setEnabled(connected and stopped and not no_checkpoint)
        self.btn_resume.setToolTip("This job stopped before its first checkpoint: nothing to resume from. "
                                   "Start a new job instead." if no_checkpoint
                                   else "Continue the job from its last checkpoint")
        self.btn_add_selection.setEnabled(bool(self.doc.selection))
        self.btn_remove_prompt.setEnabled(bool(self.prompts))
        has_ckpt = self.selected_checkpoint() is not None
        self.btn_use.setEnabled(connected and has_ckpt)
        compare_running = any(isinstance(j, CompareJob) for j in self._jobs)
        self.btn_compare.setEnabled(connected and has_ckpt and not compare_running)
        self.taste_section.set_blocked("Sending your picks to the host…" if self._taste_sending
                                       else "A job is running on the host (pause or cancel it first)" if running
                                       else "Connecting to the host…" if self.host.busy else None)

    def shutdown(self) -> None:
        """Window closing: stop listening (the jobs themselves go on on the host)."""
        self._poll.stop()
        self._pending = None
        for job in list(self._jobs):
            job.cancel()
        for job in list(self._jobs):
            if not job.wait(5000):
                _ORPHANS.append(job)  # a QThread destroyed while it runs aborts the process: keep it
        self._jobs.clear()
        self.audition.stop()
