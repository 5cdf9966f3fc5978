"""Files through the main window: MIDI import/export, projects, bad files, autosave/recovery, WAV."""

import json
import wave

import pytest
from PySide6.QtCore import QEvent, QThread
from PySide6.QtWidgets import QApplication, QMessageBox
from test_studio_support import boxes, make_window, sketch, window  # noqa: F401 - fixtures

from engine.music import Clip, Note, TempoChange, TimeSignature
from engine.project import LoopRegion, Project, load_project, save_project
from studio.files.autosave import find_orphans
from studio.files.recent import RecentFiles


def rich_clip() -> Clip:
    notes = [Note(i * 120, 21 + (i * 7) % 88, 60 + (i % 5) * 100, 1 + (i * 13) % 127) for i in range(300)]
    notes.append(Note(0, 60, 480, 90))
    notes.append(Note(0, 64, 480, 90))  # a chord: same onset, other pitch
    return Clip(notes, 480, [TempoChange(0, 87.0)], [TimeSignature(0, 3, 4)])


def test_midi_import_export_round_trip_keeps_every_note(window, tmp_path):
    clip = rich_clip()
    source = tmp_path / "in.mid"
    clip.save_midi(source)
    assert window.open_path(source)
    assert window.clip.notes == clip.notes
    assert window.clip.bpm == 87.0 and window.clip.time_signature.numerator == 3
    assert "Imported in.mid" in window.statusBar().currentMessage()
    out = tmp_path / "out.mid"
    assert window.export_midi(out)
    back, _ = Clip.from_midi(out)
    assert back.notes == clip.notes
    assert back.bpm == 87.0


def test_import_report_summary_in_status_bar(window, tmp_path):
    clip = Clip([Note(0, 10, 100, 80), Note(0, 60, 100, 80)])  # pitch 10 is off the piano
    path = tmp_path / "low.mid"
    clip.save_midi(path)
    window.open_path(path)
    assert window.clip.notes == [Note(0, 60, 100, 80)]
    assert "outside the piano range" in window.statusBar().currentMessage()


def test_project_save_load_round_trip_and_clean_state(window, make_window, tmp_path):
    window.load_project(Project(clip=rich_clip()), None)
    window.transport.set_loop(480, 1920, True)
    window.project_extras.candidates.append({"kept": True})
    window.document.select_all()
    window.editor.transpose(1)
    assert window.is_modified()
    path = tmp_path / "song.smartproj"
    assert window.save_to(path)
    assert not window.is_modified()
    assert "song" in window.windowTitle()
    other = make_window()
    assert other.open_path(path)
    assert other.clip == window.clip
    assert other.transport.loop == (480, 1920) and other.transport.loop_enabled
    assert other.project_extras.candidates == [{"kept": True}]
    assert not other.is_modified()
    assert str(path.resolve()) in RecentFiles(other.settings).paths()


def test_save_failure_keeps_old_file_and_sketch(window, tmp_path, boxes, monkeypatch):
    path = tmp_path / "keep.smartproj"
    save_project(Project(clip=sketch(3)), path)
    before = path.read_bytes()
    window.load_project(Project(clip=sketch(5)), path)
    window.document.select_all()
    window.editor.delete_selection()

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", broken)
    assert not window.save_to(path)
    assert path.read_bytes() == before
    assert boxes.warnings and "No space left" in boxes.warnings[-1]
    assert window.is_modified() and window.clip.notes == []


@pytest.mark.parametrize(
    "name, content, expect",
    [
        ("garbage.mid", b"this is not midi at all", "no MThd"),
        ("truncated.mid", b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0", "truncated"),
        ("empty.smartproj", b"", "invalid JSON"),
        ("trunc.smartproj", b'{"format": "smart-studio-project", "vers', "truncated"),
        ("future.smartproj", b'{"format": "smart-studio-project", "version": 7, "clip": {}}', "newer"),
        ("photo.png", b"\x89PNG\r\n\x1a\n....", "neither"),
    ],
)
def test_bad_files_show_a_message_and_leave_the_sketch_untouched(window, tmp_path, boxes, name, content, expect):
    window.load_project(Project(clip=sketch(4)), None)
    window.document.select_all()
    window.editor.transpose(2)
    before_clip, before_undo = window.clip, window.undo_stack.count()
    path = tmp_path / name
    path.write_bytes(content)
    assert not window.open_path(path, ask=False)
    assert len(boxes.warnings) == 1 and expect in boxes.warnings[0]
    assert "\n" not in boxes.warnings[0]
    assert window.clip is before_clip and window.undo_stack.count() == before_undo
    assert window.is_modified()


def test_midi_with_100k_notes_is_refused_clearly(window, tmp_path, boxes):
    huge = Clip([Note(i * 2, 21 + i % 88, 1, 64) for i in range(100_000)])
    path = tmp_path / "huge.mid"
    huge.save_midi(path)
    window.load_project(Project(clip=sketch(2)), None)
    assert not window.open_path(path, ask=False)
    assert "too many notes" in boxes.warnings[0]
    assert len(window.clip.notes) == 2


def test_autosave_and_recovery_after_a_crash(make_window, tmp_path, boxes):
    first = make_window(track=False)
    first.load_project(Project(clip=sketch(6)), None)
    first.document.select_all()
    first.editor.transpose(5)
    assert first.autosaver.save_now()
    recovery_file = first.autosaver.path
    assert recovery_file.exists()
    saved = json.loads(recovery_file.read_text())
    assert saved["format"] == "smart-studio-recovery"
    expected = first.clip
    # Crash: the window goes away without a clean exit (no closeEvent, no autosave clean-up).
    # The background parts a dying process would take with it are stopped first: hard-deleting
    # a window whose worker threads and timers still run corrupts the rest of the test session.
    first.generate_panel.shutdown()
    first.train_panel.shutdown()
    first.transport.shutdown()
    first.midi.shutdown()
    first.hide()
    first.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.DeferredDelete)
    QApplication.processEvents()
    assert recovery_file.exists()

    second = make_window()
    orphans = second.recoverable()
    assert [o.path for o in orphans] == [recovery_file]
    boxes.answer = QMessageBox.Yes
    assert second.offer_recovery()
    assert "did not close properly" in boxes.questions[0]
    assert second.clip == expected
    assert second.is_modified()
    assert not recovery_file.exists()  # adopted into the new window's own autosave
    assert second.autosaver.path.exists()
    # A clean exit removes the recovery file; nothing is offered next time.
    second.shutdown()
    assert not second.autosaver.path.exists()
    assert find_orphans(tmp_path / "recovery") == []


def test_autosave_only_when_modified_and_removed_after_save(window, tmp_path):
    assert not window.autosaver.save_now()  # nothing to save
    assert not window.autosaver.path.exists()
    window.load_project(Project(clip=sketch(3)), None)
    window.document.select_all()
    window.editor.nudge(1)
    assert window.autosaver.save_now()
    assert not window.autosaver.save_now()  # unchanged since the last autosave
    window.editor.nudge(1)
    assert window.autosaver.save_now()
    assert window.save_to(tmp_path / "x.smartproj")
    assert not window.autosaver.path.exists()


def test_autosave_timer_writes_the_recovery_file(window, qtbot):
    window.autosaver.set_interval(0.05)
    window.load_project(Project(clip=sketch(3)), None)
    window.document.select_all()
    window.editor.transpose(1)
    qtbot.waitUntil(window.autosaver.path.exists, timeout=3000)


def test_live_recovery_files_of_other_windows_are_not_offered(make_window):
    a = make_window()
    a.load_project(Project(clip=sketch(2)), None)
    a.document.select_all()
    a.editor.transpose(1)
    assert a.autosaver.save_now()
    b = make_window()
    assert b.recoverable() == []  # `a` is still alive


def test_export_wav_runs_in_a_worker_thread(window, tmp_path, qtbot, monkeypatch):
    window.load_project(Project(clip=Clip([Note(0, 60, 240, 100), Note(240, 67, 240, 90)])), None)
    ui_thread = QApplication.instance().thread()
    messages = []  # (message, ran on the UI thread)
    show_message = window.show_message
    monkeypatch.setattr(window, "show_message", lambda m, *a: (messages.append((m, QThread.currentThread() is ui_thread)),
                                                                 show_message(m, *a)))
    import engine.render

    render_thread = []
    real_render = engine.render.render
    monkeypatch.setattr(engine.render, "render", lambda *a, **k: (render_thread.append(QThread.currentThread() is not ui_thread),
                                                                  real_render(*a, **k))[1])
    path = tmp_path / "out.wav"
    job = window.export_wav(path, show_progress=False)
    # Waits on the window's state, not on the job's signal: that one is emitted on the worker thread.
    qtbot.waitUntil(lambda: window._wav_job is None, timeout=20000)
    with wave.open(str(path)) as w:
        assert w.getnframes() > 0.5 * w.getframerate()
    assert "Exported WAV" in window.statusBar().currentMessage()
    assert render_thread and all(render_thread)  # the rendering ran off the UI thread...
    assert messages and all(on_ui for _m, on_ui in messages)  # ...and every report came back to it
    assert not job.running


def test_new_sketch_after_discard(window, boxes):
    window.load_project(Project(clip=sketch(2)), None)
    window.document.select_all()
    window.editor.transpose(1)
    window.new_sketch()  # the fixture answers "Discard"
    assert boxes.questions and window.clip.notes == [] and not window.is_modified()


def test_loaded_project_loop_and_bad_soundfont_fall_back(window, tmp_path):
    path = tmp_path / "p.smartproj"
    save_project(Project(clip=sketch(2), loop=LoopRegion(0, 960, False), soundfont=str(tmp_path / "gone.sf2")), path)
    assert window.open_path(path)
    assert window.transport.loop == (0, 960) and not window.transport.loop_enabled
    assert window.transport.soundfont is None  # the missing SoundFont was reported, piano used
    assert load_project(path).soundfont.endswith("gone.sf2")
