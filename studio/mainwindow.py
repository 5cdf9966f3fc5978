"""The main window: piano roll in the middle, transport and edit toolbars, menus, status bar.

Room for later panels: `add_panel(dock)` docks a QDockWidget and lists it in View ▸ Panels.
A panel reads `window.clip`, `window.selection`, `window.playhead_tick` and pushes undoable
edits with `window.document.push_clip(...)` (or any QUndoCommand on `window.undo_stack`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QGuiApplication, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressDialog,
    QToolBar,
    QWidget,
)

from engine.music import Clip, Note
from engine.project import Project
from studio.editor import operations as ops
from studio.editor.document import SketchDocument
from studio.editor.editor import MidiDragHandle, PianoRollEditor
from studio.editor.notegrid import Tool
from studio.files.autosave import DEFAULT_INTERVAL_S, Autosaver, default_recovery_dir
from studio.files.commands import APP_NAME, AUTOSAVE_KEY, FileCommands
from studio.files.documents import SOUNDFONT_FILTER
from studio.files.recent import RecentFiles
from studio.files.wavexport import WavExportJob
from studio.gcguard import install_main_thread_gc
from studio.widgets import install_wheel_guard
from studio.midi.menu import MidiController, MidiMenu
from studio.transport.controller import LATENCY_CHOICES, Transport
from studio.transport.toolbar import TransportToolBar

log = logging.getLogger(__name__)
WINDOW_GEOMETRY_KEY = "window/geometry"
# The size a first start asks for; a smaller screen (a 1366×768 laptop) gets its available area instead.
PREFERRED_SIZE = (1400, 860)
# A notice interrupted sooner than this after it appeared comes back once the newer one has been shown.
NOTICE_READ_S = 4.0


class MainWindow(FileCommands, QMainWindow):
    def __init__(
        self,
        settings: QSettings | None = None,
        recovery_dir: Path | None = None,
        audio: bool = True,
        interactive: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        """`interactive=False` (screenshots, batch checks): errors go to stderr/status bar,
        never to a modal dialog, and no recovery offer is made."""
        super().__init__(parent)
        install_main_thread_gc()  # Qt objects must never be collected on a worker thread
        install_wheel_guard()  # the wheel changes only a focused control, in every window and dialog
        self.settings = settings if settings is not None else QSettings()
        self.interactive = interactive
        self.document = SketchDocument(parent=self)
        self.project_path: Path | None = None
        self.midi_source: Path | None = None  # the MIDI file the sketch came from
        self.import_report = None  # what happened to that file on import (engine.music.ImportReport)
        self.project_extras = Project()  # candidates/history/soundfont carried for later panels
        self._forced_modified = False  # e.g. after recovery: unsaved although the stack is clean
        self._change_serial = 0
        self._wav_job: WavExportJob | None = None
        self._wav_progress: QProgressDialog | None = None
        self._panels: list[QDockWidget] = []
        self._fitted_once = False
        self._fit_timer = QTimer(self)  # owned: it dies with the window, never firing into a deleted one
        self._fit_timer.setSingleShot(True)
        self._fit_timer.setInterval(0)
        self._fit_timer.timeout.connect(self._fit_to_screen)
        self._jobs_settled = False  # closing: the question about the local host's jobs has been answered
        # Status-bar notices: the one shown (text, until, since; monotonic s) and those waiting their turn.
        self._notice: tuple[str, float, float] | None = None
        self._notices: deque[tuple[str, int]] = deque()
        self._notice_timer = QTimer(self)
        self._notice_timer.setSingleShot(True)
        self._notice_timer.timeout.connect(self._next_notice)
        self.last_error: str | None = None

        self.editor = PianoRollEditor(self.document, self)
        self.setCentralWidget(self.editor)
        self.transport = Transport(self.document, self)
        self.midi = MidiController(self.document, self.transport, self)
        self.recent = RecentFiles(self.settings)
        self.autosaver = Autosaver(
            self._autosave_snapshot,
            recovery_dir if recovery_dir is not None else default_recovery_dir(),
            float(self.settings.value(AUTOSAVE_KEY, DEFAULT_INTERVAL_S)),
            self,
        )

        self._build_toolbars()
        self._build_menus()
        self._build_status_bar()
        self._connect()
        from studio.generate.panel import GeneratePanel  # the Generate panel (studio/generate)
        from studio.host import HostServices
        from studio.train.panel import TrainPanel  # the Train panel (studio/train): GRPO jobs on the host

        # One host connection, one MAA download, the musician's picks and taste: the window's, lent to the panels.
        self.services = HostServices.create(self.settings, lambda: self.project_path, self)
        self.taste_store = self.services.taste
        self.generate_panel = GeneratePanel(self, self.services)
        self.add_panel(self.generate_panel)
        self.generate_panel.install_menu(self.menuBar())
        self.train_panel = TrainPanel(self, self.services)
        self.add_panel(self.train_panel)
        self.tabifyDockWidget(self.generate_panel, self.train_panel)  # tabs: each panel gets the full height
        self.generate_panel.raise_()
        from studio.live.install import install_live  # Sync, Jam, candidate drag handles (studio/live)

        self.live = install_live(self)
        self.restore_window_size()
        self._update_title()
        self.editor.grid.center_on_notes()
        self.editor.setFocus()
        if audio:
            # After the window is up: opening the device can take a moment.
            QTimer.singleShot(0, self.transport.start_audio)
        else:
            self._set_audio_status("No sound: audio disabled")

    # ================================================================== public API for panels
    @property
    def undo_stack(self):
        return self.document.undo_stack

    @property
    def clip(self) -> Clip:
        return self.document.clip

    @property
    def selection(self) -> list[Note]:
        return self.document.selected_notes()

    @property
    def playhead_tick(self) -> float:
        return self.transport.position

    def add_panel(self, dock: QDockWidget, area: Qt.DockWidgetArea = Qt.RightDockWidgetArea) -> None:
        """Dock a panel (e.g. Generate, Train) and list it in View ▸ Panels."""
        if not dock.objectName():
            dock.setObjectName(dock.windowTitle() or f"panel{len(self._panels)}")
        self.addDockWidget(area, dock)
        self._panels.append(dock)
        self.menu_panels.menuAction().setVisible(True)
        self.menu_panels.addAction(dock.toggleViewAction())

    # ================================================================== building
    def _build_toolbars(self) -> None:
        self.transport_bar = TransportToolBar(self.transport, self.document, self)
        self.addToolBar(Qt.TopToolBarArea, self.transport_bar)
        bar = QToolBar("Edit", self)
        bar.setObjectName("editToolBar")
        self.edit_bar = bar
        self.tool_group = QActionGroup(self)
        self.tool_actions: dict[Tool, QAction] = {}
        for tool, text, key, tip in (
            (Tool.SELECT, "⬚ Select", "1", "Select, move and resize notes; drag on empty space for a rubber band"),
            (Tool.DRAW, "✎ Draw", "2", "Click to draw notes, drag to set their length"),
            (Tool.ERASE, "⌫ Erase", "3", "Click or drag over notes to delete them"),
        ):
            act = QAction(text, self)
            act.setCheckable(True)
            act.setShortcut(QKeySequence(key))
            act.setToolTip(f"{tip} ({key})")
            act.triggered.connect(lambda _=False, t=tool: self.set_tool(t))
            self.tool_group.addAction(act)
            bar.addAction(act)
            self.tool_actions[tool] = act
        self.tool_actions[Tool.SELECT].setChecked(True)
        bar.addSeparator()
        bar.addWidget(QLabel(" Snap ", self))
        self.snap_combo = QComboBox(self)
        self.snap_combo.addItems([label for label, _ in ops.SNAP_CHOICES])
        self.snap_combo.setCurrentText(self.editor.grid.snap_label)
        self.snap_combo.setToolTip("Grid for drawing, moving, resizing and nudging (T = triplets)")
        self.snap_combo.currentTextChanged.connect(self.editor.set_snap)
        self.snap_combo.activated.connect(lambda _i: self.editor.setFocus())
        bar.addWidget(self.snap_combo)
        bar.addSeparator()
        self.act_zoom_in_x = self._act("Zoom In (Horizontal)", "Ctrl+=", lambda: self.editor.zoom_x(1.25))
        self.act_zoom_out_x = self._act("Zoom Out (Horizontal)", "Ctrl+-", lambda: self.editor.zoom_x(0.8))
        self.act_zoom_in_y = self._act("Zoom In (Vertical)", "Ctrl+Shift+=", lambda: self.editor.zoom_y(2))
        self.act_zoom_out_y = self._act("Zoom Out (Vertical)", "Ctrl+Shift+-", lambda: self.editor.zoom_y(-2))
        self.act_zoom_fit = self._act("Zoom to Fit", "Ctrl+0", self.editor.zoom_to_fit)
        for act, text in (
            (self.act_zoom_out_x, "H−"), (self.act_zoom_in_x, "H+"),
            (self.act_zoom_out_y, "V−"), (self.act_zoom_in_y, "V+"), (self.act_zoom_fit, "Fit"),
        ):
            button_act = QAction(text, self)
            button_act.setToolTip(f"{act.text()} ({act.shortcut().toString()})")
            button_act.triggered.connect(act.trigger)
            bar.addAction(button_act)
        bar.addSeparator()
        self.drag_handle = MidiDragHandle(self.document, self.display_name, self)
        bar.addWidget(self.drag_handle)
        self.addToolBarBreak(Qt.TopToolBarArea)
        self.addToolBar(Qt.TopToolBarArea, bar)

    def _act(self, text: str, keys=None, slot=None, checkable: bool = False, tip: str = "") -> QAction:
        act = QAction(text, self)
        if keys:
            seqs = keys if isinstance(keys, list) else [keys]
            act.setShortcuts([QKeySequence(k) for k in seqs])
        act.setCheckable(checkable)
        if tip:
            act.setStatusTip(tip)
        if slot is not None:
            (act.toggled if checkable else act.triggered).connect(slot)
        return act

    def _build_menus(self) -> None:
        mb = self.menuBar()
        # ---- File
        m = mb.addMenu("&File")
        self.act_new = self._act("&New Sketch", QKeySequence.New, self.new_sketch)
        self.act_open = self._act("&Open…", QKeySequence.Open, self.open_dialog)
        self.act_save = self._act("&Save", QKeySequence.Save, self.save)
        self.act_save_as = self._act("Save &As…", QKeySequence.SaveAs, self.save_as)
        self.act_import = self._act("&Import MIDI…", "Ctrl+I", self.import_dialog,
                                    tip="Replace the sketch with a MIDI file's notes")
        self.act_export_midi = self._act("&Export MIDI…", "Ctrl+E", self.export_midi_dialog)
        self.act_export_wav = self._act("Export &WAV…", "Ctrl+Shift+E", self.export_wav_dialog)
        self.act_autosave = self._act("Autosave &Interval…", None, self.autosave_interval_dialog)
        self.act_quit = self._act("&Quit", QKeySequence.Quit, self.close)
        m.addActions([self.act_new, self.act_open])
        self.menu_recent = m.addMenu("Open &Recent")
        self.menu_recent.aboutToShow.connect(self._fill_recent_menu)
        m.addSeparator()
        m.addActions([self.act_save, self.act_save_as])
        m.addSeparator()
        m.addActions([self.act_import, self.act_export_midi, self.act_export_wav])
        m.addSeparator()
        m.addAction(self.act_autosave)
        m.addSeparator()
        m.addAction(self.act_quit)
        # ---- Edit
        m = mb.addMenu("&Edit")
        self.act_undo = self.undo_stack.createUndoAction(self, "&Undo")
        self.act_undo.setShortcut(QKeySequence.Undo)
        self.act_redo = self.undo_stack.createRedoAction(self, "&Redo")
        self.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        m.addActions([self.act_undo, self.act_redo])
        m.addSeparator()
        for act in self.editor.edit_actions():
            if act is None:
                m.addSeparator()
            else:
                m.addAction(act)
        # ---- View
        m = mb.addMenu("&View")
        m.addActions(list(self.tool_actions.values()))
        m.addSeparator()
        m.addActions([self.act_zoom_in_x, self.act_zoom_out_x, self.act_zoom_in_y, self.act_zoom_out_y,
                      self.act_zoom_fit])
        m.addSeparator()
        m.addAction(self.transport_bar.act_follow)
        m.addSeparator()
        m.addAction(self.transport_bar.toggleViewAction())
        m.addAction(self.edit_bar.toggleViewAction())
        self.menu_panels = m.addMenu("&Panels")
        self.menu_panels.menuAction().setVisible(False)
        # ---- Transport
        m = mb.addMenu("&Transport")
        m.addActions(self.transport_bar.transport_actions())
        m.addSeparator()
        self.act_soundfont = self._act("Choose &SoundFont…", None, self.soundfont_dialog)
        self.act_default_soundfont = self._act("Use the Shipped &Piano", None, lambda: self.set_soundfont(None))
        m.addActions([self.act_soundfont, self.act_default_soundfont])
        latency_menu = m.addMenu("Output &Latency")
        group = QActionGroup(self)
        for label, value in LATENCY_CHOICES:
            act = latency_menu.addAction(label)
            act.setCheckable(True)
            act.setChecked(value == self.transport.latency)
            act.triggered.connect(lambda _=False, v=value: self._set_latency(v))
            group.addAction(act)
        self.menu_devices = m.addMenu("Output &Device")
        self.menu_devices.aboutToShow.connect(self._fill_device_menu)
        m.addAction(self._act("&Restart Audio", None, self.transport.start_audio))
        # ---- MIDI
        self.menu_midi = MidiMenu(self.midi, self)
        mb.addMenu(self.menu_midi)
        # ---- Help
        m = mb.addMenu("&Help")
        m.addAction(self._act("&Keyboard Shortcuts", "F1", self.show_shortcuts))
        m.addAction(self._act("&About SMART Studio", None, self.show_about))

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.audio_label = QLabel("", self)
        self.audio_label.setToolTip("Audio output status")
        self.selection_label = QLabel("", self)
        sb.addPermanentWidget(self.selection_label)
        sb.addPermanentWidget(self.audio_label)

    def _connect(self) -> None:
        # Bound methods of live receivers (not lambdas over `self`): Qt drops these
        # connections when the receiver dies, so teardown signals never reach a dead window.
        ed, tr = self.editor, self.transport
        ed.message.connect(self.show_message)
        ed.seek_requested.connect(tr.seek)
        ed.loop_dragged.connect(self._on_loop_dragged)
        ed.audition_on.connect(tr.note_on)
        ed.audition_off.connect(tr.note_off)
        tr.position_changed.connect(self._on_position)
        tr.state_changed.connect(self._on_transport_state)
        tr.audio_status.connect(self._set_audio_status)
        self.midi.message.connect(self.show_message)
        self.transport_bar.editing_done.connect(ed.setFocus)
        self.transport_bar.problem.connect(self.show_message)
        self.transport_bar.act_follow.toggled.connect(self._on_follow_toggled)
        self.undo_stack.cleanChanged.connect(self._on_clean_changed)
        self.undo_stack.indexChanged.connect(self._on_undo_index)
        self.document.selection_changed.connect(self._update_selection_label)
        self.document.clip_changed.connect(self._update_selection_label)

    def _on_loop_dragged(self, start: int, end: int) -> None:
        self.transport.set_loop(start, end, True)

    def _on_position(self, tick: float) -> None:
        self.editor.set_playhead(tick, follow=self.transport.playing)

    def _on_follow_toggled(self, on: bool) -> None:
        self.editor.follow = on

    def _on_clean_changed(self, _clean: bool) -> None:
        self._update_title()

    def _on_undo_index(self, _index: int) -> None:
        self._bump_change()

    # ================================================================== small helpers
    def set_tool(self, tool: Tool) -> None:
        self.editor.set_tool(tool)
        self.tool_actions[tool].setChecked(True)

    def show_message(self, text: str, ms: int = 6000, wait: bool = False) -> None:
        """A notice in the status bar for `ms` (0: until the next one). Every notice stays readable: one
        that a newer notice interrupts within its reading time comes back after it, and `wait=True` (news
        nobody asked for just now, e.g. the audio device's state) waits behind the notice being read."""
        now = time.monotonic()
        current = self._notice
        reading = (current is not None and current[1] > now
                   and self.statusBar().currentMessage() == current[0] and current[0] != text)
        if reading and wait:
            self._notices.append((text, ms))
            return
        if reading and now - current[2] < min(NOTICE_READ_S, current[1] - current[2]):
            self._notices.appendleft((current[0], int((current[1] - now) * 1000)))
        self._display_notice(text, ms)

    def pending_notices(self) -> list[str]:
        """The notices waiting for the status bar, next first."""
        return [text for text, _ms in self._notices]

    def _display_notice(self, text: str, ms: int) -> None:
        now = time.monotonic()
        self.statusBar().showMessage(text, ms)
        self._notice = (text, now + ms / 1000, now) if ms > 0 else None
        if ms > 0:
            self._notice_timer.start(ms)
        elif self._notices:
            self._notice_timer.start(int(NOTICE_READ_S * 1000))  # a lasting one still lets the queue go on

    def _next_notice(self) -> None:
        if self._notices:
            text, ms = self._notices.popleft()
            self._display_notice(text, ms)

    def _set_audio_status(self, text: str) -> None:
        self.audio_label.setText(text)
        self.audio_label.setStyleSheet("color: #ffb060;" if text.startswith("No sound") else "color: #9fe0a0;")
        if text.startswith("No sound"):
            self.show_message(text, 15000, wait=True)

    def show_error(self, title: str, text: str) -> None:
        """A clear message box (stderr + status bar when not interactive)."""
        self.last_error = text
        if self.interactive:
            QMessageBox.warning(self, title, text)
        else:
            print(f"{title}: {text}", file=sys.stderr)
            self.show_message(text, 30000)

    def display_name(self) -> str:
        if self.project_path is not None:
            return self.project_path.stem
        if self.midi_source is not None:
            return self.midi_source.stem
        return "Untitled"

    def _update_title(self) -> None:
        self.setWindowTitle(f"{self.display_name()}[*] — {APP_NAME}")
        self.setWindowModified(self.is_modified())

    def _bump_change(self) -> None:
        self._change_serial += 1
        self._update_title()

    def _update_selection_label(self) -> None:
        n, total = len(self.document.selection), len(self.document.notes)
        self.selection_label.setText(f"{n} of {total} notes selected" if n else f"{total} notes")

    def _on_transport_state(self) -> None:
        tr = self.transport
        self.editor.set_loop(tr.loop, tr.loop_enabled)
        self._change_serial += 1  # the loop is saved with the project

    def mark_modified(self) -> None:
        """Project state outside the undo stack changed (e.g. generation history): unsaved."""
        self._forced_modified = True
        self._bump_change()

    def is_modified(self) -> bool:
        return self._forced_modified or not self.undo_stack.isClean()

    # ================================================================== WAV export
    # Here, not with the other file commands (studio.files.commands): the job's signals must reach slots
    # declared on this QObject class, so that they run on the UI thread.
    def export_wav(self, path: str | Path, show_progress: bool = True) -> WavExportJob | None:
        """Render on a worker thread; returns the job (its signals report the result)."""
        if self._wav_job is not None and self._wav_job.running:
            self.show_message("A WAV export is already running")
            return None
        job = WavExportJob(self.document.clip, path, self.transport.soundfont)
        self._wav_job = job
        self._wav_progress = None
        if show_progress and self.interactive:
            progress = QProgressDialog("Rendering…", "Cancel", 0, 0, self)
            progress.setWindowTitle("Export WAV")
            progress.setWindowModality(Qt.WindowModal)
            progress.setMinimumDuration(300)
            progress.canceled.connect(job.cancel)
            job.stage.connect(progress.setLabelText)
            self._wav_progress = progress
        # Bound slots of this window, never lambdas: a lambda has no receiver, so it would run on
        # the job's worker thread and touch widgets (and wait on its own thread) from there.
        job.finished.connect(self._wav_export_finished)
        job.failed.connect(self._wav_export_failed)
        job.cancelled.connect(self._wav_export_cancelled)
        job.stage.connect(self._wav_export_stage)
        job.start()
        return job

    @Slot(str)
    def _wav_export_stage(self, message: str) -> None:
        self.show_message(message, 0)

    @Slot(str)
    def _wav_export_finished(self, path: str) -> None:
        self._wav_export_done(f"Exported WAV: {Path(path).name}")

    @Slot(str)
    def _wav_export_failed(self, reason: str) -> None:
        self._wav_export_done(f"Cannot export WAV: {reason}", error=True)

    @Slot()
    def _wav_export_cancelled(self) -> None:
        self._wav_export_done("WAV export cancelled")

    def _wav_export_done(self, message: str, error: bool = False) -> None:
        progress, self._wav_progress = self._wav_progress, None
        if progress is not None:
            progress.reset()
            progress.deleteLater()
        job, self._wav_job = self._wav_job, None
        if job is not None:
            job.wait()
        if error:
            self.show_error("Export WAV Failed", message)
        else:
            self.show_message(message)

    # ================================================================== audio settings
    def soundfont_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose SoundFont", self._dialog_dir(), SOUNDFONT_FILTER)
        if path:
            self.set_soundfont(path)

    def set_soundfont(self, path: str | None) -> bool:
        try:
            self.transport.set_soundfont(path)
        except Exception as exc:  # SoundFontError: bad/missing file
            self.show_error("SoundFont", f"Cannot use {Path(path).name if path else 'the shipped piano'}: {exc}")
            return False
        self._forced_modified = True
        self._bump_change()
        self.show_message(f"SoundFont: {Path(path).name if path else 'shipped piano'}")
        return True

    def _set_latency(self, value) -> None:
        self.transport.set_latency(value)

    def _fill_device_menu(self) -> None:
        m = self.menu_devices
        m.clear()
        try:
            from engine.playback import list_output_devices

            devices = list_output_devices()
        except Exception as exc:
            m.addAction(f"No audio devices: {exc}").setEnabled(False)
            return
        group = QActionGroup(m)
        for label, dev in [("System Default", None)] + [(d, d) for d in devices]:
            act = m.addAction(label)
            act.setCheckable(True)
            act.setChecked(dev == self.transport.device)
            act.triggered.connect(lambda _=False, d=dev: self.transport.set_device(d))
            group.addAction(act)

    # ================================================================== help
    def show_shortcuts(self) -> None:
        QMessageBox.information(self, "Keyboard Shortcuts", SHORTCUTS_HELP)

    def show_about(self) -> None:
        QMessageBox.about(
            self,
            "About SMART Studio",
            "<b>SMART Studio</b><br>Sketch piano ideas, hear them, hand them off as MIDI or audio.",
        )

    # ================================================================== closing
    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._jobs_settled and self._ask_about_local_jobs():
            event.ignore()  # kept open, or closing once the host has stopped the job (stop_local_jobs)
            return
        if not self.maybe_save():
            self._jobs_settled = False
            event.ignore()
            return
        self.shutdown()
        event.accept()

    def _ask_about_local_jobs(self) -> bool:
        """Closing ends the local host and with it its training jobs: say so and ask. True when the window
        stays open for now (the musician keeps working, or the job is being stopped and the window closes
        when the host has answered)."""
        job = self.train_panel.running_local_job()
        if job is None or not self.interactive:
            return False
        box = QMessageBox(QMessageBox.Question, APP_NAME,
                          f"A training job is running on this computer's host: {job}.", parent=self)
        box.setInformativeText("It runs inside the studio's local host, which ends when the studio closes. "
                               "Keep the studio open to let it finish, or stop the job and quit (its "
                               "checkpoints so far stay on disk; it will not start again by itself).")
        keep = box.addButton("Keep running", QMessageBox.RejectRole)
        stop = box.addButton("Stop the job and quit", QMessageBox.DestructiveRole)
        box.setDefaultButton(keep)
        box.exec()
        if box.clickedButton() is not stop:
            return True
        self._jobs_settled = True
        self.show_message("Stopping the training job…", 0)
        self.train_panel.stop_local_jobs(self.close)
        return True

    def restore_window_size(self) -> None:
        """The size (and place) the musician left the window at; on a first start the preferred size cut to
        the screen's available area (without task bars), so the status bar and dock tabs are on screen."""
        saved = self.settings.value(WINDOW_GEOMETRY_KEY)
        if isinstance(saved, (bytes, bytearray, QByteArray)) and self.restoreGeometry(QByteArray(saved)):
            self._fit_to_screen()
            return
        self.resize(*PREFERRED_SIZE)
        self._fit_to_screen()

    def _fit_to_screen(self) -> None:
        if not self.interactive and QGuiApplication.platformName() == "offscreen":
            return  # a screenshot without a screen: the designed size, not that of a virtual screen
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is None:
            return
        area = screen.availableGeometry()
        # The frame (title bar, borders) is outside the widget's size: leave room for it.
        frame_w = max(0, self.frameGeometry().width() - self.geometry().width())
        frame_h = max(0, self.frameGeometry().height() - self.geometry().height())
        width = min(self.width(), area.width() - frame_w)
        height = min(self.height(), area.height() - frame_h)
        if (width, height) != (self.width(), self.height()):
            self.resize(width, height)
        frame = self.frameGeometry()
        if not area.contains(frame):
            left = min(max(frame.left(), area.left()), area.right() - frame.width() + 1)
            top = min(max(frame.top(), area.top()), area.bottom() - frame.height() + 1)
            self.move(left, top)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._fitted_once and QGuiApplication.platformName() != "offscreen":
            # The window frame's size is known only once the window is shown (and with a window manager a
            # moment later). Offscreen (tests, screenshots) has no frame to allow for: the fit done when the
            # window was made stands, and a size set before showing is kept.
            self._fitted_once = True
            self._fit_to_screen()
            self._fit_timer.start()

    def save_window_size(self) -> None:
        self.settings.setValue(WINDOW_GEOMETRY_KEY, self.saveGeometry())

    def shutdown(self) -> None:
        """Clean exit: stop audio/MIDI, finish exports, remove the recovery file."""
        self.save_window_size()
        if self._wav_job is not None:
            self._wav_job.cancel()
            self._wav_job.wait()
        self.train_panel.shutdown()  # before the host connection it listens on goes away
        self.live.shutdown()  # the jam and the live MIDI ports, before the host and the transport
        self.generate_panel.shutdown()
        self.services.shutdown()  # the download, the local host; the last picks land on disk
        self.transport.shutdown()
        self.midi.shutdown()
        self.autosaver.clean_exit()


SHORTCUTS_HELP = """\
Space\tPlay / stop
Enter\tBack to start (loop start when looping)
L\tLoop on/off (drag in the ruler to set the region)
M\tMetronome on/off
F\tFollow the playhead
1 / 2 / 3\tSelect / Draw / Erase tool
Up/Down\tTranspose (Shift: octave)
Left/Right\tNudge by the grid
Ctrl+Up/Down\tVelocity ±8
Alt+wheel\tVelocity of the note under the mouse
Ctrl+wheel\tZoom horizontally (Ctrl+Shift: vertically)
Shift+wheel\tScroll horizontally
Q\tQuantize to the grid
Ctrl+D\tDuplicate
Ctrl+Z / Ctrl+Shift+Z\tUndo / redo
Alt+drag\tMove/resize without snapping
Right click\tDelete a note
"""

