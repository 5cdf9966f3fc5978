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
    QDockWidget,
    QTableWidgetItem,
)

from engine import api
from engine.api import MaaStatus
from engine.job_api import JobCheckpoint, JobDone, JobInfo, JobState, JobStateEvent, JobStep
from studio.generate.audition import Audition
from studio.host import HostServices
from studio.host.connection import LOCAL, MAA_UNKNOWN
from studio.theme import STYLE_DIM as DIM
from studio.theme import STYLE_OK as OK
from studio.theme import STYLE_WARN as WARN
from studio.train.layout import setup_ui
from studio.train.presets import (
    WEIGHTED,
    describe_step,
    fmt_duration,
    fmt_number,
    job_status,
    local_catalogue,
    preset_seconds,
    preset_values,
)
from studio.train.prompts import PromptClip, prompt_from_notes, prompt_from_region
from studio.train.taste_job import collect_pairs, pair_prompts
from studio.host.workers import Calls
from studio.train.workers import CompareJob, EventsWatcher
from studio.widgets import compact_combos, guard_wheel

log = logging.getLogger(__name__)

MAX_COMPARE_PROMPTS = 4


class TrainPanel(QDockWidget):
    status = Signal(str)

    def __init__(self, window, services: HostServices) -> None:
        super().__init__("Train", window)
        self.setObjectName("trainPanel")
        self.win = window
        self.doc = window.document
        self.host = services.connection  # one host per studio, the window's
        self.downloads = services.downloads
        self.taste_store = services.taste
        self.audition = Audition(window.transport, window.document, self)
        self.prompts: list[PromptClip] = []
        self.job_id: str | None = None
        self.job_info: JobInfo | None = None
        self.job_state: JobState | None = None
        self.calls = Calls(self)  # every host call and worker of this panel
        self.calls.failed.connect(self._error)
        self.calls.finished.connect(self._on_worker_finished)
        self._watcher: EventsWatcher | None = None
        self._status_busy = False
        self._status_again = False  # a status was asked for while one was out: ask again when it is back
        self._state_epoch = 0  # bumped whenever the stream or a control moves the job's state on
        self._steps_total = 0
        self._taste_sending = False  # a taste tune's picks are on their way to the host
        self._taste_method: str | None = None  # the method of the taste tune sent last
        self._listed_jobs: list[JobInfo] = []  # the host's jobs as last listed (what a queued job waits for)
        self.records: list[JobStep] = []
        self.catalogue = local_catalogue()  # presets, rewards and options the host offers
        self._catalogue_from: str | None = None  # the host URL the catalogue came from
        self._maa_seen = MAA_UNKNOWN
        setup_ui(self)
        self._connect_ui()
        self._poll = QTimer(self)
        self._poll.setInterval(3000)
        self._poll.timeout.connect(self.refresh_status)
        self.host.changed.connect(self._on_host_changed)
        self.downloads.progress.connect(self._on_download_progress)
        self.downloads.failed.connect(self._on_download_failed)
        self.doc.selection_changed.connect(self._sync_buttons)
        self.status.connect(window.show_message)
        self._fill_catalogue()
        self._preset_picked = False  # the musician chose a preset: a host's catalogue no longer replaces it
        self.apply_preset(self.default_preset())
        guard_wheel(self)
        compact_combos(self)
        self._on_host_changed()

    # ================================================================== UI
    def _connect_ui(self) -> None:
        """What the widgets of `layout.setup_ui` do."""
        self.jobs_combo.activated.connect(self._on_job_picked)
        self.btn_refresh.clicked.connect(self.refresh_jobs)
        self.btn_start.clicked.connect(self.start)
        self.btn_pause.clicked.connect(lambda: self._control("pause"))
        self.btn_resume.clicked.connect(lambda: self._control("resume"))
        self.btn_cancel.clicked.connect(lambda: self._control("cancel"))
        self.preset_combo.activated.connect(self._on_preset_picked)
        self.reward_combo.currentIndexChanged.connect(self._sync_reward)
        self.btn_download.clicked.connect(self.download_maa)
        for w in (self.spin_prompts, self.spin_group):
            w.valueChanged.connect(self._sync_counts)
        self.btn_add_selection.clicked.connect(self.add_selection)
        self.btn_add_loop.clicked.connect(self.add_loop_region)
        self.btn_remove_prompt.clicked.connect(self.remove_prompt)
        self.chk_procedural.toggled.connect(self._sync_counts)
        self.spin_procedural.valueChanged.connect(self._sync_counts)
        self.taste_section.requested.connect(self.tune_taste)
        self.ckpt_table.itemSelectionChanged.connect(self._sync_buttons)
        self.btn_use.clicked.connect(self.use_checkpoint)
        self.btn_compare.clicked.connect(self.compare)
        self.ab.chosen.connect(self._log)

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
        missing = self.host.maa_status() == MaaStatus.MISSING
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
        if self._needs_maa.get(reward) and self.host.maa_status() == MaaStatus.MISSING:
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
        if self.reward_needs_maa() and self.host.maa_status() == MaaStatus.RANDOM_WEIGHTS:
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
        elif status == MaaStatus.AVAILABLE:
            text, style = "MAA weights available on the host.", OK
        elif status == MaaStatus.RANDOM_WEIGHTS:
            text, style = ("The host has only random-weight MAA: the job runs, but its scores are NOT aesthetic "
                           "ratings (plumbing test only).", WARN)
        elif status == MaaStatus.MISSING:
            text, style = ("This reward listens with the MAA scoring model, which is not installed on the host: "
                           "download it, or pick an offline reward (no MAA).", WARN)
        else:
            text, style = "Whether MAA rewards are available is known once the host is running.", DIM
        self.maa_label.setText(text)
        self.maa_label.setStyleSheet(style)
        self.btn_download.setVisible(self.reward_needs_maa() and status == MaaStatus.MISSING)
        self._set_reward_title()
        self._sync_buttons()

    def download_maa(self) -> None:
        """The studio's MAA download (the Generate panel's notice shows it too, and the local host restarts with
        the weights); the label here says how it goes, then follows the host's MAA status."""
        self.downloads.start()

    def _on_download_progress(self, text: str, _fraction: float) -> None:
        self.maa_label.setText(text)
        self.maa_label.setStyleSheet(DIM)

    def _on_download_failed(self, reason: str) -> None:
        self.maa_label.setText(f"Download failed: {reason}")
        self.maa_label.setStyleSheet(WARN)

    def _set_reward_title(self) -> None:
        info = self.job_info
        cfg = info.config if info is not None else {}  # the job's options (engine.api.GRPOOptions names)
        if info is not None and info.is_taste_tune:
            self.plots.set_reward_title("Tune toward my taste — DPO on your picks and taste-ranked samples"
                                        if info.taste_method == "dpo" else "Reward — your taste model's score")
            return
        spec = (info.reward if info is not None else None) or self.reward_spec() or ""
        note = ""
        try:
            names = [name for name, _w in api.parse_reward_spec(spec)]
        except Exception:  # noqa: BLE001 - a half-typed weights spec: no note
            names = []
        if names and not any(self._needs_maa.get(n, n.startswith("maa-")) for n in names):
            note = " (offline, no MAA)"
        elif cfg.get("maa_random") or any(r.maa_random for r in self.records[-1:]):
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
        loop = self.win.transport.loop
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
        if status == MaaStatus.MISSING and self._maa_seen != MaaStatus.MISSING and self.reward_needs_maa():
            offline = self._first_offline_reward()
            if offline is not None:  # default to what works here, and say so
                self.reward_combo.setCurrentIndex(self.reward_combo.findData(offline))
                self._log("The host has no MAA scoring model: the reward is now an offline one "
                          f"({self.reward_combo.currentText()}).")
        self._maa_seen = status
        self._sync_reward()
        if self.host.connected:
            self.refresh_jobs()
        self._sync_buttons()

    def _on_catalogue(self, catalogue: dict) -> None:
        """The connected host's presets and rewards replace the ones shown so far."""
        self.catalogue = catalogue
        self._fill_catalogue()
        if not self._preset_picked and self.default_preset() != self.preset_combo.currentData():
            self.apply_preset(self.default_preset())  # what this host can do (a GPU host: the paper's run)

    def _on_catalogue_failed(self, reason: str) -> None:
        self._log(f"The host did not list its training options ({reason}); showing this studio's own.")

    def _run(self, name: str, fn, on_result=None, on_failed=None):
        """Run `fn` on a worker thread; the callbacks run on the UI thread (`studio.host.workers.Calls`)."""
        return self.calls.run(name, fn, on_result, on_failed)

    def _on_worker_finished(self, worker) -> None:
        if worker is self._watcher:
            self._watcher = None
        if isinstance(worker, CompareJob):
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

    def _fill_jobs(self, jobs: list[JobInfo]) -> None:
        self._listed_jobs = list(jobs)
        self.jobs_combo.clear()
        for j in reversed(jobs):  # newest first
            self.jobs_combo.addItem(f"{j.id} · {j.state} · {j.reward} · step {j.progress.step}/"
                                    f"{j.progress.steps or '?'}", j.id)
        if self.job_id is not None:
            i = self.jobs_combo.findData(self.job_id)
            if i >= 0:
                self.jobs_combo.setCurrentIndex(i)
        elif jobs:
            running = [j for j in jobs if j.state.active]
            if running:  # a job started earlier (or before a restart) is still going: follow it
                self.attach(running[0].id)

    def _on_job_picked(self, index: int) -> None:
        job_id = self.jobs_combo.itemData(index)
        if job_id and job_id != self.job_id:
            self.attach(job_id)

    # ================================================================== start / follow
    def start(self) -> None:
        if self.job_active:
            self.status.emit("A job is already running (pause or cancel it first)")
            return
        if self.reward_needs_maa() and self.host.maa_status() == MaaStatus.MISSING:
            self._error("Start", "MAA weights are not installed on the host, so this reward cannot be computed: "
                                 "pick an offline reward, or download the MAA scoring model")
            return
        if not self.host.ensure(self.start, self):
            self._log("Connecting to the host…")
            return
        options = self.options()
        midi = [p.midi() for p in self.prompts] or None
        if midi and self.chk_procedural.isChecked():
            options["procedural_prompts"] = self.spin_procedural.value()
        options["name"] = f"{self.win.display_name()} · {options['reward']}"
        client = self.host.client
        self.btn_start.setEnabled(False)
        self._log(f"Starting: reward {options['reward']}, {options['steps']} steps, {options['prompts_per_step']}×"
                  f"{options['group']} completions per step, β {options['beta']}, lr {options['lr']:g}"
                  + (f", {len(midi)} prompt(s) from the sketch" if midi else ", procedural prompts"))
        self._run("Starting the job", lambda: client.start_training(options, prompts_midi=midi), self._on_started)

    def tune_taste(self, options: dict | None = None) -> None:
        """Send the profile's picks to the host as a taste-tuning job and follow it."""
        if self.job_active:
            self.status.emit("A job is already running (pause or cancel it first)")
            return
        profile = self.taste_section.profile_dir
        if profile is None:
            return
        options = dict(options if options is not None else self.taste_section.options())
        if not self.host.ensure(lambda: self.tune_taste(options), self):
            self._log("Connecting to the host…")
            return
        if self.host.device() == "cpu":
            options["cpu_threads"] = 1  # shares the CPU with the host; one thread is fastest on a busy machine
        limit = self.host.body_limit()
        client, store = self.host.client, self.taste_section.store
        name = f"{self.win.display_name()} · my taste ({options['method']})"

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
        self.job_id, self.job_info = job_id, None
        self._set_job_state(None)
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
        self.calls.track(watcher)
        self._watcher = watcher
        watcher.start()

    def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def _on_event(self, event: JobStep | JobStateEvent) -> None:
        if self.sender() is not self._watcher:
            return
        if isinstance(event, JobStateEvent):
            self._set_job_state(event.state)
            self._log(f"Job {event.job}: {self.job_state}")
            self._show_progress()
            self.refresh_jobs()
            return
        if not isinstance(event, JobStep):
            return
        self.records.append(event)
        if event.is_dpo:
            self.plots.set_layout("dpo")
        self.plots.add(event)
        if event.steps_total:
            self._steps_total = event.steps_total
        if event.maa_random:
            self._set_reward_title()
        self._log(describe_step(event))
        self._show_progress()
        self.refresh_status()  # new checkpoints show up in the table (one request at a time)

    def _on_done(self, done: JobDone) -> None:
        if self.sender() is not self._watcher:
            return
        self._set_job_state(done.state)
        self._watcher = None
        msg = f"Job {done.job} {self.job_state}"
        steps_done = (done.result or {}).get("steps_done")  # the job process's result (training.host_job)
        if done.error:
            msg += f": {done.error}"
        elif steps_done is not None:
            msg += f" after {steps_done} steps"
        self._log(msg)
        self.status.emit(msg)
        self._show_checkpoints(done.checkpoints)
        self.refresh_status()
        self.refresh_jobs()

    def _set_job_state(self, state: JobState | None) -> None:
        """The job's state as the event stream or a control reply says; a status reply asked for before
        this moment is older news and must not undo it (see refresh_status)."""
        self.job_state = state
        self._state_epoch += 1
        self._sync_buttons()  # a state change is what the controls follow (a replay's end re-enables them)

    @property
    def job_active(self) -> bool:
        """The followed job is queued or running (no other job may start meanwhile)."""
        return self.job_state is not None and self.job_state.active

    def refresh_status(self) -> None:
        if not self.host.connected or self.job_id is None:
            return
        if self._status_busy:
            self._status_again = True
            return
        self._status_busy, self._status_again = True, False
        client, job_id, asked_at = self.host.client, self.job_id, self._state_epoch

        def done(info: JobInfo):
            self._status_busy = False
            if info.id != self.job_id or asked_at != self._state_epoch or self._status_again:
                # The stream moved the job on (finished it, say) while this request was out, or another
                # job is followed now: the answer describes an older moment. Ask again rather than show
                # a finished job as running.
                self.refresh_status()
                return
            self.job_info = info
            self.job_state = info.state
            self._steps_total = info.steps or self._steps_total
            if info.taste_method == "dpo":
                self.plots.set_layout("dpo")
            self._show_progress()
            self._show_checkpoints(info.checkpoints)
            self._set_reward_title()
            if not self.job_active:
                self._poll.stop()
            self._sync_buttons()

        def failed(reason):
            self._status_busy = False
            self._log(f"Status: {reason}")

        self._run("Job status", lambda: client.job(job_id), done, failed)

    def _show_progress(self) -> None:
        info = self.job_info
        steps = self._steps_total or (info.steps if info is not None else 0)
        step = self.records[-1].step if self.records else (info.progress.step if info is not None else 0)
        state = self.job_state or (info.state if info is not None else None)
        preparing = state is JobState.RUNNING and not self.records
        if preparing:
            self.progress.setRange(0, 0)  # busy: the job works before its first step (see job_phase)
        else:
            self.progress.setRange(0, 1000)
        if steps and not preparing:
            self.progress.setValue(int(1000 * min(1.0, step / steps)))
            self.progress.setFormat(f"step {step} / {steps}")
        self.job_label.setText(job_status(self.job_id, info, state, step, steps, self.records, self._listed_jobs))
        self.job_label.setStyleSheet(WARN if state is JobState.FAILED else "")

    def _active_jobs(self) -> list[JobInfo]:
        """The host's queued and running jobs as last listed, with the followed one if it is active."""
        active = [j for j in self._listed_jobs if j.state.active]
        if self.job_id is not None and self.job_active and not any(j.id == self.job_id for j in active):
            active.insert(0, self.job_info or JobInfo(id=self.job_id, state=self.job_state))
        return active

    def running_local_job(self) -> str | None:
        """A job running or queued on the studio's own local host, as a line for the close question; None
        when there is none (a remote host's jobs go on without the studio)."""
        if self.host.mode != LOCAL or not self.host.connected:
            return None
        active = self._active_jobs()
        if not active:
            return None
        job = active[0]
        more = f" and {len(active) - 1} more" if len(active) > 1 else ""
        return (f"job {job.id} ({job.name or job.reward or 'training'}, {job.state}, "
                f"step {job.progress.step}/{job.progress.steps or '?'}){more}")

    def stop_local_jobs(self, then) -> None:
        """Cancel the local host's active jobs (so that the next start does not run them again), then call
        `then()` — on the UI thread, once the host has answered or failed to."""
        ids = [j.id for j in self._active_jobs()]
        if not ids or not self.host.connected:
            then()
            return
        client = self.host.client

        def cancel_all():
            for job_id in ids:
                client.cancel_job(job_id)

        self._log(f"Stopping {', '.join(ids)}: the studio is closing")
        self._run("Stopping the job", cancel_all, lambda _r: then(), lambda _reason: then())

    def _show_checkpoints(self, checkpoints: list[JobCheckpoint]) -> None:
        current = self.selected_checkpoint()
        final = self.job_info.final_model if self.job_info is not None else None
        rows = [(str(c.step), c.path, c.reward_mean, c.diversity) for c in checkpoints]
        if final:
            rows.append(("final", final, None, None))
        if [path for _step, path, _r, _d in rows] == [self.ckpt_table.item(i, 0).data(Qt.UserRole)
                                                      for i in range(self.ckpt_table.rowCount())]:
            return
        self.ckpt_table.setRowCount(len(rows))
        for i, (step, path, reward_mean, diversity) in enumerate(rows):
            for col, text in enumerate((step, fmt_number(reward_mean), fmt_number(diversity))):
                item = QTableWidgetItem(text)
                item.setData(Qt.UserRole, path)
                item.setToolTip(path)
                self.ckpt_table.setItem(i, col, item)
            if path == current:
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

        def done(info: JobInfo):
            self._set_job_state(info.state)
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
        base = self.job_info.model if self.job_info is not None else None
        if tuned is None or not base or not self.host.connected:
            self.status.emit("Pick a checkpoint of a job first")
            return
        prompts = [p.midi() for p in self.prompts[:MAX_COMPARE_PROMPTS]] or [None] * 3
        profile = self.taste_section.profile_dir
        if not self.prompts and profile is not None and self.job_info is not None and self.job_info.is_taste_tune:
            # A taste tune is judged at the musician's own prompts (read on the worker).
            prompts = lambda: pair_prompts(profile, 3)  # noqa: E731
        restore = self.host.health.model.path if self.host.health is not None else None
        job = CompareJob(self.host.client, base, tuned, prompts, bars=2, seed=random.randrange(1, 2**30),
                         restore=restore)
        job.progress.connect(self._on_compare_progress)
        job.result.connect(self._on_pairs)
        job.failed.connect(self._on_compare_failed)
        self.calls.track(job)
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
        running = self.job_active
        connected = self.host.connected
        blocked = self.reward_needs_maa() and self.host.maa_status() == MaaStatus.MISSING
        self.btn_start.setEnabled(not running and not self.host.busy and not blocked)
        self.btn_start.setToolTip("This reward needs the MAA scoring model, which the host does not have"
                                  if blocked else "Start a GRPO job on the host with these settings")
        self.btn_pause.setEnabled(connected and running)
        self.btn_cancel.setEnabled(connected and self.job_state is not None and self.job_state.cancellable)
        stopped = self.job_state is not None and self.job_state.resumable
        # A GRPO job resumes from its last checkpoint: with none there is nothing to resume (a taste tune
        # starts over anyway, and says so).
        info = self.job_info
        no_checkpoint = (stopped and not (info is not None and (info.is_taste_tune or info.checkpoints))
                         and self.ckpt_table.rowCount() == 0)
        self.btn_resume.setEnabled(connected and stopped and not no_checkpoint)
        self.btn_resume.setToolTip("This job stopped before its first checkpoint: nothing to resume from. "
                                   "Start a new job instead." if no_checkpoint
                                   else "Continue the job from its last checkpoint")
        self.btn_add_selection.setEnabled(bool(self.doc.selection))
        self.btn_remove_prompt.setEnabled(bool(self.prompts))
        has_ckpt = self.selected_checkpoint() is not None
        self.btn_use.setEnabled(connected and has_ckpt)
        compare_running = any(isinstance(j, CompareJob) for j in self.calls.workers)
        self.btn_compare.setEnabled(connected and has_ckpt and not compare_running)
        self.taste_section.set_blocked("Sending your picks to the host…" if self._taste_sending
                                       else "A job is running on the host (pause or cancel it first)" if running
                                       else "Connecting to the host…" if self.host.busy else None)

    def shutdown(self) -> None:
        """Window closing: stop listening (the jobs themselves go on on the host)."""
        self._poll.stop()
        self.host.forget_pending(self)
        self.calls.shutdown()
        self.audition.stop()
