"""The window's file commands, by feature: the open project (what is saved, loading one, asking to save),
new / open / import / save / export MIDI and WAV, recent files, autosave and recovery. A mixin of
`studio.mainwindow.MainWindow`, whose document, transport, editor, autosaver and notices they use."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from engine.meter import model_meter
from engine.project import PROJECT_SUFFIX, LoopRegion, Project, ProjectError, save_project
from studio.files.autosave import RecoveryFile, find_orphans
from studio.files.documents import MIDI_FILTER, OPEN_FILTER, PROJECT_FILTER, WAV_FILTER, OpenError, read_any

APP_NAME = "SMART Studio"
AUTOSAVE_KEY = "files/autosaveSeconds"


class FileCommands:
    """File commands of the main window (a mixin: `self` is the MainWindow)."""

    # ================================================================== project state
    def current_project(self) -> Project:
        tr = self.transport
        loop = LoopRegion(tr.loop[0], tr.loop[1], tr.loop_enabled) if tr.loop else None
        return Project(
            clip=self.document.clip,
            loop=loop,
            soundfont=tr.soundfont,
            candidates=self.project_extras.candidates,
            history=self.project_extras.history,
            view=self.editor.view_state(),
        )

    def _autosave_snapshot(self):
        origin = self.project_path or self.midi_source
        return self.current_project(), (str(origin) if origin else None), self.is_modified(), self._change_serial

    def load_project(self, project: Project, path: Path | None, midi_source: Path | None = None) -> None:
        """Make `project` the open document (not undoable; clears the history)."""
        self.transport.stop()
        self.document.load(project.clip)
        self.project_extras = project
        self.project_path = path
        self.midi_source = midi_source
        self._forced_modified = False
        if project.loop is not None:
            self.transport.set_loop(project.loop.start, project.loop.end, project.loop.enabled)
        else:
            self.transport.set_loop(None, None)
        if project.soundfont != self.transport.soundfont:
            try:
                self.transport.set_soundfont(project.soundfont)
            except Exception as exc:
                self.show_message(f"SoundFont {project.soundfont} unavailable ({exc}); using the shipped piano")
                self.transport.soundfont = None
        self.transport.seek(0)
        if not self.editor.restore_view(project.view):  # a project reopens where it was left
            self.editor.grid.center_on_notes()
        self._update_title()
        self._update_selection_label()

    def maybe_save(self) -> bool:
        """Ask to save unsaved changes. False = the user cancelled."""
        if not self.is_modified() or not self.interactive:
            return True
        answer = QMessageBox.question(
            self,
            APP_NAME,
            f"Save the changes to {self.display_name()}?",
            QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel,
            QMessageBox.Save,
        )
        if answer == QMessageBox.Save:
            return self.save()
        return answer == QMessageBox.Discard

    # ================================================================== file commands
    def new_sketch(self) -> None:
        if self.maybe_save():
            self.load_project(Project(), None)
            self.autosaver.discard()
            self.show_message("New sketch")

    def open_dialog(self) -> None:
        if not self.maybe_save():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open", self._dialog_dir(), OPEN_FILTER)
        if path:
            self.open_path(path, ask=False)

    def open_path(self, path: str | Path, ask: bool = True) -> bool:
        """Open a project or MIDI file. On failure a message box; the open sketch is untouched."""
        if ask and not self.maybe_save():
            return False
        path = Path(path)
        try:
            opened = read_any(path)
        except OpenError as exc:
            self.show_error("Cannot Open", str(exc))
            return False
        self.import_report = None if opened.kind == "project" else opened.report
        if opened.kind == "project":
            self.load_project(opened.project, path)
            self.show_message(f"Opened {path.name} ({len(opened.project.clip.notes)} notes)")
        else:
            rebarred = self._read_in_model_meter(opened.project)
            self.load_project(opened.project, None, midi_source=path)
            done = "; ".join(opened.report.messages + ([rebarred] if rebarred else [])) or opened.report.summary()
            self.show_message(f"Imported {path.name}: {len(opened.project.clip.notes)} notes; {done}", 15000)
        self.recent.add(path)
        self.autosaver.discard()
        return True

    def _read_in_model_meter(self, project: Project) -> str | None:
        """Give a just-imported sketch the bar lines the model reads (engine.meter) before it is opened: the
        ruler, bar numbers and Regenerate then count the bars the model counts. Part of opening, so not an
        undo step (a first Ctrl+Z after opening must not re-bar the song). Returns what was done, for the
        import message (None: the file's meter is the model's). The file on disk is never touched."""
        clip, note = model_meter(project.clip)
        if note is None:
            return None
        project.clip = clip
        return f"{note} as the model reads it (the file itself is unchanged)"

    def import_dialog(self) -> None:
        if not self.maybe_save():
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import MIDI", self._dialog_dir(), MIDI_FILTER)
        if path:
            self.open_path(path, ask=False)

    def save(self) -> bool:
        if self.project_path is None:
            return self.save_as()
        return self.save_to(self.project_path)

    def save_as(self) -> bool:
        suggested = str(Path(self._dialog_dir()) / (self.display_name() + PROJECT_SUFFIX))
        path, _ = QFileDialog.getSaveFileName(self, "Save Project", suggested, PROJECT_FILTER)
        if not path:
            return False
        if not path.endswith(PROJECT_SUFFIX):
            path += PROJECT_SUFFIX
        return self.save_to(Path(path))

    def save_to(self, path: Path) -> bool:
        """Atomic save; on failure the previous file on disk is intact and the sketch stays open."""
        try:
            save_project(self.current_project(), path)
        except ProjectError as exc:
            self.show_error("Cannot Save", str(exc))
            return False
        self.project_path = Path(path)
        self._forced_modified = False
        self.undo_stack.setClean()
        self.autosaver.discard()
        self.recent.add(path)
        self._update_title()
        self.show_message(f"Saved {Path(path).name}")
        return True

    def export_midi_dialog(self) -> None:
        if not self.document.notes:
            self.show_message("Nothing to export: the sketch is empty")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export MIDI", str(self.export_midi_suggestion()), MIDI_FILTER)
        if path:
            if not path.lower().endswith((".mid", ".midi")):
                path += ".mid"
            self.export_midi(path)

    def export_midi_suggestion(self) -> Path:
        """Where Export MIDI proposes to write: next to the song, never over the file it was imported from
        (one click from losing the original)."""
        path = Path(self._dialog_dir()) / f"{self.display_name()}.mid"
        if self.midi_source is not None and path.resolve() == self.midi_source.resolve():
            path = path.with_name(f"{self.display_name()} (edited).mid")
        return path

    def export_midi(self, path: str | Path) -> bool:
        try:
            self.document.clip.save_midi(path)
        except OSError as exc:
            self.show_error("Cannot Export", f"Cannot write {Path(path).name}: {exc.strerror or exc}")
            return False
        self.show_message(f"Exported {len(self.document.notes)} notes to {Path(path).name}")
        return True

    def export_wav_dialog(self) -> None:
        if not self.document.notes:
            self.show_message("Nothing to export: the sketch is empty")
            return
        suggested = str(Path(self._dialog_dir()) / (self.display_name() + ".wav"))
        path, _ = QFileDialog.getSaveFileName(self, "Export WAV", suggested, WAV_FILTER)
        if path:
            if not path.lower().endswith(".wav"):
                path += ".wav"
            self.export_wav(path)

    def autosave_interval_dialog(self) -> None:
        value, ok = QInputDialog.getInt(
            self, "Autosave", "Autosave every (seconds, 0 = off):", int(self.autosaver.interval_s), 0, 3600
        )
        if ok:
            self.settings.setValue(AUTOSAVE_KEY, value)
            self.autosaver.set_interval(value)

    def _fill_recent_menu(self) -> None:
        m = self.menu_recent
        m.clear()
        paths = self.recent.existing()
        if not paths:
            m.addAction("(none)").setEnabled(False)
            return
        for p in paths:
            m.addAction(Path(p).name, lambda path=p: self.open_path(path)).setToolTip(p)
        m.addSeparator()
        m.addAction("Clear List", self.recent.clear)

    def _dialog_dir(self) -> str:
        for p in (self.project_path, self.midi_source):
            if p is not None:
                return str(p.parent)
        recent = self.recent.existing()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    # ================================================================== recovery
    def recoverable(self) -> list[RecoveryFile]:
        self.unreadable_recovery: list[tuple[Path, str]] = []  # damaged autosaves, kept on disk
        return find_orphans(self.autosaver.directory, self.unreadable_recovery)

    def unreadable_recovery_text(self) -> str | None:
        """What to tell the musician about autosaves that could not be read (None: there are none)."""
        bad = getattr(self, "unreadable_recovery", [])
        if not bad:
            return None
        lines = "\n".join(f"{path}: {reason}" for path, reason in bad[:5])
        more = f"\n… and {len(bad) - 5} more" if len(bad) > 5 else ""
        return (f"{len(bad)} autosave file{'s' if len(bad) != 1 else ''} could not be read and "
                f"{'were' if len(bad) != 1 else 'was'} left where {'they are' if len(bad) != 1 else 'it is'}:\n"
                f"{lines}{more}")

    def recover(self, rec: RecoveryFile) -> None:
        """Load an orphaned autosave as unsaved work, then adopt it into this window's autosave."""
        origin = Path(rec.origin) if rec.origin else None
        is_project = origin is not None and origin.suffix.lower() == PROJECT_SUFFIX
        self.load_project(rec.project, origin if is_project else None, None if is_project else origin)
        self._forced_modified = True
        self._bump_change()
        if self.autosaver.save_now():
            rec.path.unlink(missing_ok=True)
        self.show_message(f"Recovered {rec.describe()}")

    def offer_recovery(self) -> bool:
        """Ask about each orphaned autosave (newest first). True if one was recovered."""
        found = self.recoverable()
        unreadable = self.unreadable_recovery_text()
        if unreadable:
            self.show_message(unreadable.splitlines()[0])
        if not self.interactive:
            return False
        if unreadable:
            QMessageBox.warning(self, "Unreadable Autosave", unreadable)
        for rec in found:
            answer = QMessageBox.question(
                self,
                "Recover Unsaved Work",
                f"SMART Studio did not close properly.\n\nRecover {rec.describe()}?",
                QMessageBox.Yes | QMessageBox.Discard | QMessageBox.Ignore,
                QMessageBox.Yes,
            )
            if answer == QMessageBox.Yes:
                self.recover(rec)
                return True
            if answer == QMessageBox.Discard:
                rec.path.unlink(missing_ok=True)
        return False
