"""The Generate panel (a dock): what the musician does there — continue, regenerate the selection,
reward-guided search; audition solo / in context / A-B; accept (one undo step) or discard.

The jobs behind it live next door: the widgets (`layout`), the options shown and read back
(`options_view`), the host line and MAA status (`hostview`), the musician's picks (`picks`), the request
session (`session`), the typed history and candidates (`history`), where a continuation goes
(`placement`), the MAA notice (`maa`), the sketch's own scores (`sketchscore`). The host connection, the MAA
download and the taste store are the window's (`studio.host`), handed to the panel.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QMenu, QTreeWidgetItem

from engine.api import GenerateRequest, InfillSpan, MaaStatus
from engine.errors import first_line
from engine.maa_weights import AXES
from engine.meter import model_meter
from engine.music import Clip, Note
from studio.editor.ghosts import GhostOverlay
from studio.generate.audition import CONTEXT, SOLO, Audition
from studio.generate.candidates import (
    TASTE,
    TASTE_COLUMN,
    CandidateSortProxy,
    CandidateTableModel,
    candidate_colour,
)
from studio.generate.history import (
    ACCEPTED,
    CONTINUE,
    DISCARDED,
    INFILL,
    SEARCH,
    STREAMING,
    Candidate,
    GenerationHistory,
    Request,
)
from studio.generate import hostview, options_view, picks
from studio.generate.layout import setup_ui
from studio.generate.options import GenerateOptions
from studio.generate.placement import (
    EMPTY,
    PlacementConflict,
    continuation_span,
    notes_in,
    place_candidate,
    prompt_notes,
)
from studio.generate.search import MAA_REWARDS, TASTE_MIX, TASTE_REWARDS, reward_label
from studio.generate.session import GenerationSession, describe_request
from studio.generate.sketchscore import SketchScorer
from studio.host import HostServices
from studio.host.connection import LOCAL, REMOTE
from studio.theme import STYLE_DIM, STYLE_WARN
from studio.widgets import compact_combos, guard_wheel


class GeneratePanel(QDockWidget):
    status = Signal(str)  # one-line messages for the status bar

    def __init__(self, window, services: HostServices) -> None:
        super().__init__("Generate", window)
        self.setObjectName("generatePanel")
        self.win = window
        self.doc = window.document
        self.settings = window.settings
        self.options = GenerateOptions.load(self.settings)
        self.host = services.connection
        self.downloads = services.downloads
        self._without_maa_retried = False  # the local host failed with an MAA file and was started without it
        self.ghosts = GhostOverlay(window.editor.grid)
        self.audition = Audition(window.transport, window.document, self)
        self.model = CandidateTableModel(self)
        self.proxy = CandidateSortProxy(self)
        self.proxy.setSourceModel(self.model)
        self.session = GenerationSession(self)
        self.history: GenerationHistory | None = None
        self._ab: list[Candidate] = []
        self._discarded: dict[str, list[Candidate]] = {}  # by request: turned down for the same prompt
        self.taste_store = services.taste
        self._project = None
        self._click_time: float | None = None
        self.request_note: str | None = None  # said when the request started and kept with its outcome
        self._adopt_timer = QTimer(self)  # owned: it dies with the panel, never firing into a dead one
        self._adopt_timer.setSingleShot(True)
        self._adopt_timer.setInterval(0)
        self._adopt_timer.timeout.connect(self._adopt_project)
        self._host_timer = QTimer(self)  # while the host starts: say what it is doing
        self._host_timer.setInterval(1000)
        self._host_timer.timeout.connect(self._show_host_progress)

        setup_ui(self)
        self._connect_ui()
        self.scorer = SketchScorer(self.doc, self.host, window.editor.grid, self.sketch_label, self)
        self.combo_strip.currentTextChanged.connect(self.scorer.strip.set_axis)
        self._make_actions()
        self._apply_options_to_ui()
        guard_wheel(self)
        compact_combos(self, chars=8)
        self.session.candidates_reset.connect(self._on_candidates_reset)
        self.session.note.connect(self._on_note)
        self.session.candidate_ready.connect(self._on_candidate_ready)
        self.session.candidate_dropped.connect(self._on_candidate_dropped)
        self.session.progress.connect(self._on_progress)
        self.session.message.connect(self._set_job_text)
        self.session.meter_note.connect(self._on_meter_note)
        self.session.finished.connect(self._on_finished)
        self.session.idle.connect(self._on_idle)
        self.host.changed.connect(self._on_host_changed)
        self.doc.clip_changed.connect(self._on_clip_changed)
        self.doc.selection_changed.connect(self._sync_buttons)
        self.audition.changed.connect(self._sync_buttons)
        self.status.connect(window.show_message)
        self._on_host_changed()
        self._adopt_project()
        if services.settings_note:  # why the saved MAA file is not used, said once the UI is up
            self.maa.say(services.settings_note, warn=True)
            self.status.emit(services.settings_note)

    # ================================================================== widgets
    def _connect_ui(self) -> None:
        """What the widgets of `layout.setup_ui` do."""
        self.btn_connect.clicked.connect(self.connect_host)
        self.btn_host.clicked.connect(self.host_dialog)
        for w in (self.spin_candidates, self.spin_bars, self.spin_temperature, self.spin_top_p, self.spin_seed,
                  self.spin_low, self.spin_high, self.spin_beams, self.spin_expand, self.spin_budget):
            w.valueChanged.connect(self._options_from_ui)
        for w in (self.chk_key, self.chk_score):
            w.toggled.connect(self._options_from_ui)
        for w in (self.combo_root, self.combo_scale, self.combo_placement, self.combo_reward):
            w.currentIndexChanged.connect(self._options_from_ui)
        self.btn_continue.clicked.connect(self.continue_)
        self.btn_regen.clicked.connect(self.regenerate_selection)
        self.btn_stop.clicked.connect(self.stop)
        self.btn_search.clicked.connect(self.search)
        self.combo_sort.currentTextChanged.connect(self.sort_by)
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection)
        self.table.doubleClicked.connect(lambda _i: self.audition_selected(CONTEXT))
        self.btn_solo.clicked.connect(lambda: self.audition_selected(SOLO))
        self.btn_context.clicked.connect(lambda: self.audition_selected(CONTEXT))
        self.btn_ab.clicked.connect(self.ab_toggle)
        self.btn_accept.clicked.connect(self.accept_selected)
        self.btn_discard.clicked.connect(self.discard_selected)
        self.btn_clear.clicked.connect(self.clear_candidates)
        self.history_tree.itemDoubleClicked.connect(self._restore_history_item)
        self.maa.weights_chosen.connect(self._use_weights)
        self.maa.message.connect(self.status)
        self.btn_prefer_a.clicked.connect(lambda: self.compare("A"))
        self.btn_prefer_b.clicked.connect(lambda: self.compare("B"))
        self.btn_prefer_tie.clicked.connect(lambda: self.compare("tie"))
        self.taste_store.changed.connect(self._on_taste_changed)
        self.taste_store.message.connect(lambda text, error: self.status.emit(text))

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
                                "Continue from the bar line after the selection, or from the playhead")
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
        options_view.apply_options_to_ui(self)

    def _fill_rewards(self) -> None:
        options_view.fill_rewards(self)

    def _options_from_ui(self, *_args) -> None:
        options_view.options_from_ui(self, *_args)

    def settings_summary(self) -> str:
        return options_view.settings_summary(self)

    def set_placement(self, mode: str) -> None:
        """Insert, replace or empty space only (placement.MODES)."""
        self.combo_placement.setCurrentIndex(self.combo_placement.findData(mode))

    # ================================================================== host
    def connect_host(self) -> None:
        self.host.connect_host()

    def host_dialog(self) -> None:
        hostview.host_dialog(self)

    def set_host(self, mode: str, *, model_dir: str | None = None, url: str = "", token: str = "",
                 maa_path: str | None = None, connect: bool = True) -> None:
        hostview.set_host(self, mode, model_dir=model_dir, url=url, token=token, maa_path=maa_path, connect=connect)

    def _on_host_changed(self) -> None:
        hostview.on_host_changed(self)

    def _show_host_progress(self) -> None:
        hostview.show_host_progress(self)

    def _ensure_host(self, action) -> bool:
        """True when connected; otherwise start/connect and run `action` once connected."""
        if self.host.ensure(action, self, on_failed=self._on_host_unavailable):
            return True
        self._set_job_text("Starting the local host (loading the model)… keep editing: the request runs as soon "
                           "as it is up" if self.host.mode == LOCAL else "Connecting to the host…")
        return False

    def _on_host_unavailable(self, reason: str) -> None:
        """The request waiting for the host is dropped: the host did not come up."""
        self._set_job_text(f"Cannot generate: {reason}", error=True)
        self.status.emit(f"Generation host unavailable: {reason}")

    def maa_usable(self) -> bool:
        return self.host.maa_usable()

    def _sync_maa(self) -> None:
        hostview.sync_maa(self)

    def _use_weights(self, path: str) -> None:
        hostview.use_weights(self, path)

    def download_maa(self) -> None:
        self.maa.download()

    # ================================================================== where a request goes
    def continue_tick(self, model: Clip | None = None) -> int:
        """The continuation point: the bar line after the selection (after the bar of its last onset: a note
        held by the pedal past that bar line does not push the start a bar later, nor off the grid); else
        the playhead — unless there is no music before the playhead, then the end of the song (Continue
        never ignores the song). `model`: the request's `model_clip`, when it has re-barred the sketch."""
        sel = self.doc.selection
        if sel:
            clip = self.model_clip() if model is None else model  # the bar lines the model reads
            return clip.bar_tick(clip.bar_index_at(max(n.start for n in sel)) + 1)
        at = max(0, int(self.win.playhead_tick))
        if self.doc.notes and not prompt_notes(self.doc.clip, at):
            return self.doc.clip.end_tick
        return at

    def model_clip(self) -> Clip:
        """The sketch with the bar lines the model reads (engine.meter; the host re-bars prompts alike): the
        bars every request counts. The sketch itself unless its meter is outside the model's vocabulary.
        A request re-bars the sketch once and hands the result to what counts its bars."""
        return model_meter(self.doc.clip).clip

    def ruler_bars(self, ticks: tuple[int, int]) -> str:
        """The span [a, b) in the bar numbers of the ruler, e.g. "bars 5–6"."""
        clip = self.doc.clip
        first, last = clip.bar_index_at(ticks[0]) + 1, clip.bar_index_at(max(ticks[0], ticks[1] - 1)) + 1
        return f"bar {first}" if first == last else f"bars {first}–{last}"

    def infill_span(self, model: Clip | None = None) -> tuple[int, int] | None:
        """(start bar, end bar) of the selected notes' onsets in the model's bars (`model_clip`, or the request's
        `model`), or None without a selection."""
        sel = self.doc.selection
        if not sel:
            return None
        clip = self.model_clip() if model is None else model
        first = clip.bar_index_at(min(n.start for n in sel))
        last = clip.bar_index_at(max(n.start for n in sel))
        return first, last + 1

    def prompt_note(self, at: int) -> str | None:
        """Plain words when the model has nothing to continue (empty or drums-only music before `at`)."""
        if prompt_notes(self.doc.clip, at):
            return None
        report = self.win.import_report
        drums = bool(report and any("drums" in d for d in report.tracks_dropped)) and not self.doc.notes
        if drums:
            return ("The file holds only drums, which the studio does not use (piano only): there is no music to "
                    "continue, so the model starts a new idea from nothing.")
        return "There is no music before this point: the model starts a new idea from nothing."

    # ================================================================== requests
    def _generate_request(self, **where) -> GenerateRequest | None:
        """The /v1/generate request of the options for the sketch as it is (the host re-bars it alike and says
        so), continued or infilled as `where` says (at_tick, or infill and bars); None (said why) when the
        contract refuses it."""
        o = self.options
        fields = {"prompt_midi": base64.b64encode(self.doc.clip.to_midi_bytes()).decode("ascii"),
                  "candidates": o.candidates, "bars": o.bars, "temperature": o.temperature, "top_p": o.top_p,
                  "score": bool(o.score) and self.maa_usable(), **where}
        if o.seed:
            fields["seed"] = o.seed
        allowed = o.allowed()
        if allowed is not None:
            fields["allowed_pitches"] = allowed
        try:
            return GenerateRequest(**fields)
        except ValueError as exc:  # pydantic's ValidationError: e.g. a sketch larger than a request may be
            self._set_job_text(f"Cannot send this request: {first_line(exc)}", error=True)
            return None

    def _new_request(self, mode: str, **values) -> Request:
        o = self.options
        return Request.new(mode, o.to_dict(), allowed_pitches=o.allowed(), model=self.host.model_version(),
                           host={"mode": self.host.mode, "url": self.host.url if self.host.mode == REMOTE else "local",
                                 "device": self.host.device()},
                           maa=self.host.maa_status(), **values)

    def _continuation_target(self, model: Clip) -> tuple[int, tuple[int, int]] | None:
        """(point, span) of a continuation in the request's `model_clip`, or None (said why) when 'Empty space
        only' has no room."""
        at = self.continue_tick(model)
        span = continuation_span(model, at, self.options.bars)
        if self.options.placement == EMPTY:
            taken = notes_in(self.doc.notes, span)
            if taken:
                where = self.ruler_bars(span)
                verb = "holds" if where.startswith("bar ") else "hold"
                self._set_job_text(f"{where.capitalize()} already {verb} music and 'Music after' is 'Empty space "
                                   f"only': choose Insert or Replace, or move the playhead to empty bars.", error=True)
                return None
        return at, span

    def continue_(self) -> None:
        self._click_time = time.monotonic()
        if not self._check_options():
            return
        target = self._continuation_target(self.model_clip())
        if target is None or not self._ensure_host(self.continue_):
            return
        at, span = target
        body = self._generate_request(at_tick=at)
        if body is None:
            return
        request = self._new_request(CONTINUE, at_tick=at, placement=self.options.placement, span_ticks=list(span))
        self._start(request, body, span)
        bar = self.doc.clip.bar_index_at(at) + 1
        notes = []
        if not self.doc.selection and at != max(0, int(self.win.playhead_tick)):
            notes.append(f"Nothing before the playhead: continuing the song from its end (bar {bar}).")
        if self.prompt_note(at):
            notes.append(self.prompt_note(at))
        self.request_note = " ".join(notes) or None
        self._set_job_text(f"Continuing from bar {bar}: {body.candidates} candidate(s)…"
                           + (f" {self.request_note}" if self.request_note else ""))

    def regenerate_selection(self) -> None:
        self._click_time = time.monotonic()
        if not self.doc.selection:
            self.status.emit("Select the notes whose bars should be regenerated")
            self._set_job_text("Regenerate selection: select some notes first", error=True)
            return
        if not self._check_options():
            return
        if not self._ensure_host(self.regenerate_selection):
            return
        clip = self.model_clip()  # the bars this request counts, re-barred once
        span = self.infill_span(clip)
        body = self._generate_request(infill=InfillSpan(start_bar=span[0], end_bar=span[1]), bars=span[1] - span[0])
        if body is None:
            return
        ticks = (clip.bar_tick(span[0]), clip.bar_tick(span[1]))
        request = self._new_request(INFILL, at_tick=None, span_bars=list(span), span_ticks=list(ticks))
        self._start(request, body, ticks)
        self._set_job_text(f"Regenerating {self.ruler_bars(ticks)}: {body.candidates} candidate(s)…")

    def _start(self, request: Request, body: GenerateRequest, span: tuple[int, int]) -> None:
        self.request_note = None
        self.audition.stop()
        self.clear_candidates()
        self.settings_section.set_expanded(False)  # the candidates and their actions need the room now
        self.ghosts.set_region(span)  # shades what the candidates are written for; ghosts stay bright on top
        self.ghosts.reset_paint_clock()
        self.session.start_generation(self.host.client, request, body, span)
        self._refresh_history()
        self._sync_buttons()

    def _check_options(self) -> bool:
        self._adopt_project()  # a project opened just now (its deferred check may not have run yet)
        try:
            self.options.validate()
        except ValueError as exc:
            self._set_job_text(str(exc), error=True)
            return False
        if self.session.running:
            self.session.stop()
        return True

    def search(self) -> None:
        if not self._check_options():
            return
        o = self.options
        if o.search_reward in TASTE_REWARDS and not self.taste_store.ready:  # reset or never fit
            self._set_job_text("Search by your taste: " + self.taste_store.describe()[0], error=True)
            self._fill_rewards()
            return

        def needs_maa() -> bool:
            return o.search_reward in MAA_REWARDS or o.search_reward in TASTE_MIX

        if needs_maa() and self.host.connected and not self.maa_usable():
            o.search_reward = "in-scale"
            self._fill_rewards()
        model_clip, meter_note = model_meter(self.doc.clip)  # the beams grow by the model's bars
        target = self._continuation_target(model_clip)
        if target is None or not self._ensure_host(self.search):
            return
        if needs_maa() and not self.maa_usable():
            self._set_job_text("This reward needs MAA weights on the host; pick an offline reward", error=True)
            return
        self.audition.stop()
        self.clear_candidates()
        at, span = target
        self.request_note = f"Model's bars: {meter_note}." if meter_note else None
        request = self._new_request(SEARCH, at_tick=at, placement=o.placement, span_ticks=list(span),
                                    reward=o.search_reward, beams=o.search_beams, budget_s=o.search_budget_s,
                                    meter_note=meter_note)
        self.ghosts.set_region(span)
        self.session.start_search(self.host.client, request, model_clip, at, span, bars=o.bars,
                                  beams=o.search_beams, expansions=o.search_expansions, reward=o.search_reward,
                                  budget_s=o.search_budget_s, temperature=o.temperature, top_p=o.top_p,
                                  allowed_pitches=o.allowed(), seed=o.seed or None,
                                  taste=picks.taste_reward(self.taste_store) if o.search_reward in TASTE_REWARDS else None)
        self._refresh_history()
        self._sync_buttons()
        self._set_job_text(f"Searching {o.bars} bar(s) with {o.search_beams} beam(s), "
                           f"reward {reward_label(o.search_reward)}, budget {o.search_budget_s:.0f} s…"
                           + (f"\n{self.request_note}" if self.request_note else ""))

    @property
    def generating(self) -> bool:
        return self.session.running

    @property
    def current_request(self) -> Request | None:
        """The latest request started from this panel (None before the first)."""
        return self.session.request

    def stop(self) -> None:
        self.session.stop()

    # ------------------------------------------------------------------ session events
    def _on_candidates_reset(self) -> None:
        self.model.set_items(sorted(self.session.candidates.values(), key=lambda c: c.index))
        self._rebuild_ghosts()
        self._score_taste()

    def _layer(self, cand: Candidate) -> int:
        return self.model.items.index(cand)

    def _on_note(self, cand: Candidate, note: Note) -> None:
        if cand not in self.model.items:
            return
        self.ghosts.add_notes(self._layer(cand), [note])
        if len(cand.notes) == 1 or len(cand.notes) % 8 == 0:
            self.model.item_changed(cand)

    def _on_candidate_ready(self, cand: Candidate) -> None:
        self._score_taste()
        self.model.item_changed(cand)
        if cand in self.model.items:
            self.ghosts.set_ghost_notes(self._ghost_layers())
        self._sync_maa()
        self.proxy.invalidate()

    def _on_candidate_dropped(self, cand: Candidate) -> None:
        self.model.remove(cand)
        self._rebuild_ghosts()

    def _on_meter_note(self, note: str) -> None:
        """The host read the prompt with other bar lines than the sketch's: say so while it runs and after."""
        line = f"Model's bars: {note}."
        self.request_note = f"{self.request_note} {line}" if self.request_note else line
        self._set_job_text(f"{self.job_label.text()}\n{line}")

    def _on_progress(self, value: int, maximum: int, fmt: str) -> None:
        self.progress.setRange(0, maximum)
        self.progress.setValue(value)
        self.progress.setFormat(fmt)
        self.progress.show()

    def _on_finished(self, text: str, error: bool) -> None:
        self._set_job_text(f"{text}\n{self.request_note}" if self.request_note else text, error=error)
        if error:
            self.status.emit(text)
        self._mark_modified()
        self._refresh_history()
        self._sync_maa()
        self._sync_buttons()
        if self.model.items and not self.table.selectionModel().selectedRows():
            self.select_item(self._best_item() or self.model.items[0])

    def _on_idle(self) -> None:
        self.progress.hide()
        self._sync_buttons()

    # ================================================================== candidates on screen
    def _ghost_layers(self):
        return [(c.notes, candidate_colour(c.index)) for c in self.model.items]

    def _rebuild_ghosts(self) -> None:
        self.ghosts.set_ghost_notes(self._ghost_layers())
        self._on_table_selection()

    def selected_item(self) -> Candidate | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        src = self.proxy.mapToSource(rows[0])
        return self.model.items[src.row()] if 0 <= src.row() < len(self.model.items) else None

    def select_item(self, item: Candidate) -> None:
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

    def _best_item(self, axis: str | None = None) -> Candidate | None:
        axis = axis or (self.combo_sort.currentText() if self.combo_sort.currentText() in (*AXES, TASTE) else "CE")
        if axis == TASTE:
            tasted = [i for i in self.model.items if i.uid in self.model.taste]
            return max(tasted, key=lambda i: self.model.taste[i.uid][0]) if tasted else None
        scored = [i for i in self.model.items if i.scores and axis in i.scores and self.model.show_scores]
        return max(scored, key=lambda i: i.scores[axis]) if scored else None

    def sort_by(self, axis: str) -> None:
        if axis == TASTE:
            self.table.sortByColumn(TASTE_COLUMN, Qt.DescendingOrder)
            if not self.taste_store.ready:
                self.status.emit("No taste scores yet: " + self.taste_store.describe()[0])
        elif axis in AXES:
            self.table.sortByColumn(2 + AXES.index(axis), Qt.DescendingOrder)
        else:
            self.table.sortByColumn(0, Qt.AscendingOrder)

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

    def accept(self, item: Candidate) -> bool:
        """One undoable edit: the candidate goes into the sketch as its placement says."""
        if not item.notes:
            self.status.emit("This candidate has no notes")
            return False
        try:
            placed = place_candidate(self.doc.clip, item)
        except PlacementConflict as exc:
            self._set_job_text(f"Not accepted: {exc}", error=True)
            self.status.emit(f"Not accepted: {exc}")
            return False
        self.audition.stop()
        picks = self._record_accept(item)  # before the sketch changes: the prompt is the music before it now
        if item.mode == INFILL:
            verb = f"Regenerate bars ({item.label})"
        else:
            verb = f"Accept candidate {item.label}" + (" (insert)" if placed.shifted else "")
        added = set(placed.added)
        self.doc.push_clip(verb, placed.clip, [n for n in placed.clip.notes if n in added])
        item.status = ACCEPTED
        self.history.store(item)
        req = self.history.find(item.request)
        if req is not None:
            req.accepted = item.index
            self.history.save(req)
        self._remove(item)
        self._refresh_history()
        detail = ""
        if placed.replaced:
            detail = f" replacing {placed.replaced}"
        elif placed.shifted:
            bars = placed.room / max(1, self.doc.clip.time_signature_at(item.span[0]).ticks_per_bar(self.doc.clip.ppq))
            detail = f"; {placed.shifted} later notes moved back {bars:g} bar{'s' if bars != 1 else ''}"
        if picks:
            detail += f"; saved as your pick over {picks} other{'s' if picks != 1 else ''}"
        self.status.emit(f"Accepted {item.label}: {len(item.notes)} notes{detail} (Ctrl+Z undoes)")
        return True

    def discard_selected(self) -> None:
        item = self.selected_item()
        if item is not None:
            self.discard(item)

    def discard(self, item: Candidate) -> None:
        if self.audition.item is item:
            self.audition.stop()
        if item.notes and item.span:  # no pair on its own; it loses to whichever one is accepted later
            self._discarded.setdefault(item.request, []).append(item)
        item.status = DISCARDED
        self.history.store(item)
        self._remove(item)
        self._mark_modified()

    # ================================================================== the musician's picks (taste)
    def _record_accept(self, item: Candidate) -> int:
        return picks.record_accept(self, item)

    def compare_pair(self) -> tuple[Candidate, Candidate] | None:
        return picks.compare_pair(self)

    def compare(self, choice: str) -> bool:
        return picks.compare(self, choice)

    def _score_taste(self) -> None:
        picks.score_taste(self)

    def _on_taste_changed(self) -> None:
        self._score_taste()
        self._fill_rewards()

    def _remove(self, item: Candidate) -> None:
        self.model.remove(item)
        self.session.forget(item)
        self._ab = [i for i in self._ab if i is not item]
        self._rebuild_ghosts()
        if not self.model.items:
            self.ghosts.set_region(None)
        self._sync_buttons()

    def clear_candidates(self) -> None:
        if self.session.running and self.session.request is not None and self.session.request.mode != SEARCH:
            self.stop()
        self.audition.stop()
        self.model.set_items([])
        self.session.show([])
        self._ab = []
        self.ghosts.clear()
        self.random_warning.hide()
        self._sync_buttons()

    # ================================================================== project and history
    def _mark_modified(self) -> None:
        self.win.mark_modified()

    def _adopt_project(self) -> None:
        """A project was opened (or a new sketch started): show its history and its open candidates."""
        project = self.win.project_extras
        if project is self._project:
            return
        self._project = project
        if self.session.running:
            self.stop()
        self.history = GenerationHistory(project)
        self._discarded = {}
        self.session.history = self.history
        self.clear_candidates()
        self.scorer.clear()
        self._refresh_history()
        if self.history.latest is not None:
            self.show_request(self.history.latest.id)

    def show_request(self, request_id: str) -> int:
        """Put the request's open candidates back on the roll; how many there are."""
        items = self.history.open_candidates(request_id)
        self.clear_candidates()
        self.session.show(items)
        self.model.set_items(items)
        self._rebuild_ghosts()
        self._score_taste()
        spans = {i.span for i in items if i.span}
        self.ghosts.set_region(next(iter(spans)) if len(spans) == 1 else None)
        self._sync_maa()
        self._sync_buttons()
        return len(items)

    def _restore_history_item(self, tree_item: QTreeWidgetItem, _col: int) -> None:
        n = self.show_request(tree_item.data(0, Qt.UserRole))
        self.tabs.setCurrentIndex(0)
        self.status.emit(f"{n} candidate(s) of that request shown" if n else "No open candidates left in that request")

    def _refresh_history(self) -> None:
        tree = self.history_tree
        tree.clear()
        for req in reversed(self.history.requests if self.history else []):
            desc = describe_request(req)
            model_name = Path(req.model["path"]).name if (req.model or {}).get("path") else "?"
            result = req.status
            scores = [s for s in req.scores or [] if s]
            if scores:
                best = max(s.get("CE", 0) for s in scores)
                result += f", best CE {best:.2f}" + (" (random MAA)" if req.maa == MaaStatus.RANDOM_WEIGHTS else "")
            if req.accepted is not None:
                result += f", accepted #{int(req.accepted) + 1}"
            item = QTreeWidgetItem([req.time.replace("T", " "), req.mode, desc, model_name, result])
            item.setData(0, Qt.UserRole, req.id)
            item.setToolTip(2, desc + (f"\nModel's bars: {req.meter_note}" if req.meter_note else ""))
            tree.addTopLevelItem(item)
        for c in range(tree.columnCount()):
            tree.resizeColumnToContents(c)

    # ================================================================== sketch edits
    def _on_clip_changed(self) -> None:
        # MainWindow.load_project swaps `project_extras` right after loading the clip: look once it has.
        self._adopt_timer.start()
        self.scorer.sketch_changed()

    # ================================================================== misc
    def _set_job_text(self, text: str, error: bool = False) -> None:
        self.job_label.setText(text)
        self.job_label.setStyleSheet(STYLE_WARN if error else STYLE_DIM)

    def _sync_buttons(self, *_args) -> None:
        running = self.session.running
        item = self.selected_item()
        has_notes = item is not None and bool(item.notes)
        self.btn_stop.setEnabled(running)
        self.act_stop.setEnabled(running)
        self.btn_regen.setEnabled(bool(self.doc.selection))
        self.act_regenerate.setEnabled(bool(self.doc.selection))
        ready = has_notes and item.status != STREAMING
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
        pair = self.compare_pair()
        for b in (self.btn_prefer_a, self.btn_prefer_b, self.btn_prefer_tie):
            b.setEnabled(pair is not None)
        self.compare_label.setText(f"A = {pair[0].label}, B = {pair[1].label}:" if pair else "Compare: pick two")
        self.compare_hint.setVisible(pair is None and len(self.model.items) >= 2)

    def shutdown(self) -> None:
        """Stop every job and the local host (window closing)."""
        self._host_timer.stop()
        self.scorer.stop()
        self.host.forget_pending(self)
        self.session.shutdown()
        self.audition.stop()
