"""Transport, ruler, shortcuts and MIDI-in recording (audio disabled: the silent clock runs)."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from test_studio_support import boxes, click, drag, make_window, sketch, window  # noqa: F401 - fixtures

from engine.music import Clip, Note
from engine.project import Project
from studio.midi.menu import MidiMenu

PPQ = 480
ROOT = Path(__file__).resolve().parents[1]


def test_space_plays_and_the_playhead_moves(window, qtbot):
    window.load_project(Project(clip=sketch(8)), None)
    grid = window.editor.grid
    grid.setFocus()
    QTest.keyClick(grid, Qt.Key_Space)
    assert window.transport.playing
    assert "Stop" in window.transport_bar.act_play.text()
    qtbot.waitUntil(lambda: window.playhead_tick > PPQ / 4, timeout=3000)
    assert window.editor.grid.playhead_tick == window.playhead_tick
    QTest.keyClick(grid, Qt.Key_Space)
    assert not window.transport.playing
    stopped_at = window.playhead_tick
    assert stopped_at > 0
    QTest.keyClick(grid, Qt.Key_Return)
    assert window.playhead_tick == 0


def test_l_and_m_toggle_loop_and_metronome(window):
    grid = window.editor.grid
    grid.setFocus()
    QTest.keyClick(grid, Qt.Key_L)
    assert window.transport.loop_enabled and window.transport.loop is not None
    assert window.transport_bar.act_loop.isChecked()
    QTest.keyClick(grid, Qt.Key_L)
    assert not window.transport.loop_enabled
    QTest.keyClick(grid, Qt.Key_M)
    assert window.transport.metronome and window.transport_bar.act_metronome.isChecked()


def test_ruler_click_seeks_and_drag_sets_loop(window):
    window.load_project(Project(clip=sketch(8)), None)
    window.editor.set_snap("1/4")
    ruler, geo = window.editor.ruler, window.editor.geo
    click(ruler, QPointF(geo.tick_to_x(PPQ * 3.1), 10))
    assert window.playhead_tick == PPQ * 3
    drag(ruler, QPointF(geo.tick_to_x(PPQ * 1), 10), QPointF(geo.tick_to_x(PPQ * 5), 10))
    assert window.transport.loop == (PPQ, PPQ * 5) and window.transport.loop_enabled
    assert window.editor.grid.loop == (PPQ, PPQ * 5)
    # Rewinding with looping on goes to the loop start.
    window.transport_bar.act_rewind.trigger()
    assert window.playhead_tick == PPQ


def test_silent_clock_wraps_inside_the_loop(window, qtbot):
    window.load_project(Project(clip=Clip([Note(0, 60, 100, 80)])), None)
    window.transport_bar.tempo.setValue(600.0)  # 0.1 s per quarter: quick loops
    window.transport.set_loop(0, PPQ, True)
    window.transport.play(0)
    seen = []
    window.transport.position_changed.connect(seen.append)

    def wrapped() -> bool:
        return any(later < earlier for earlier, later in zip(seen, seen[1:]))

    qtbot.waitUntil(wrapped, timeout=10000)  # however slow the machine: until it has wrapped once
    window.transport.stop()
    assert seen and max(seen) < PPQ  # never ran past the loop end


def test_no_audio_status_bar_says_why(window):
    assert "No sound" in window.audio_label.text()


def test_audio_failure_reason_is_shown(window, monkeypatch):
    from engine import playback

    def no_device(self):
        raise playback.AudioUnavailable("no audio output device found")

    monkeypatch.setattr(playback.Player, "open", no_device)
    assert not window.transport.start_audio()
    assert "no audio output device found" in window.audio_label.text()
    # The closed player still exists for MIDI out; editing and the clock still work.
    window.transport.play(0)
    assert window.transport.playing
    window.transport.stop()


def test_midi_in_recording_one_undo_step_per_take(window, qtbot):
    window.load_project(Project(clip=Clip()), None)
    rec = window.midi.recorder
    rec.quantize_label = "1/4"
    heard = []
    window.transport.note_on = lambda p, v: heard.append(("on", p, v))
    window.transport.note_off = lambda p: heard.append(("off", p))
    window.transport.play(PPQ * 4)

    def played(kind: str, pitch: int, velocity: int, at: float) -> None:
        """A MIDI event arriving at tick `at`, as the input port delivers it (queued to the UI thread)."""
        window.transport.seek(at)
        rec.midi_callback(SimpleNamespace(kind=kind, pitch=pitch, velocity=velocity))
        QApplication.processEvents()

    played("note_on", 60, 100, PPQ * 4)
    played("note_on", 64, 90, PPQ * 4 + 300)
    played("note_off", 60, 0, PPQ * 5 + 10)
    window.transport.seek(PPQ * 6)
    window.transport.stop()  # 64 is still held: finished at the stop position
    notes = window.clip.notes
    assert [n.pitch for n in notes] == [60, 64]
    assert notes[0].start == PPQ * 4 and notes[1].start == PPQ * 5  # quantized to quarters
    assert notes[0].velocity == 100 and notes[1].velocity == 90
    assert ("on", 60, 100) in heard and ("off", 60) in heard  # thru to the synth
    assert window.undo_stack.count() == 1
    window.undo_stack.undo()
    assert window.clip.notes == []


def test_midi_events_from_another_thread_are_handled_on_the_ui_thread(window, qtbot):
    import threading
    from types import SimpleNamespace

    heard = []
    window.transport.note_on = lambda p, v: heard.append((p, v, threading.current_thread()))
    t = threading.Thread(
        target=window.midi.recorder.midi_callback, args=(SimpleNamespace(kind="note_on", pitch=61, velocity=77),)
    )
    t.start()
    t.join()
    qtbot.waitUntil(lambda: bool(heard), timeout=2000)
    assert heard == [(61, 77, threading.main_thread())]


def test_midi_menu_without_backend_shows_the_reason(window, monkeypatch):
    monkeypatch.setattr(window.midi, "backend_status", lambda refresh=False: (False, "no MIDI API works: test"))
    menu: MidiMenu = window.menu_midi
    menu.rebuild()
    first = menu.actions()[0]
    assert not first.isEnabled() and "no MIDI API works: test" in first.text()


def test_add_panel_hook(window):
    from PySide6.QtWidgets import QDockWidget, QLabel

    dock = QDockWidget("Generate", window)
    dock.setWidget(QLabel("later"))
    window.add_panel(dock)
    assert dock.toggleViewAction() in window.menu_panels.actions()
    assert window.dockWidgetArea(dock) == Qt.RightDockWidgetArea


def test_main_py_screenshot(tmp_path):
    midi = tmp_path / "in.mid"
    Clip([Note(i * 240, 60 + i % 12, 200, 50 + i) for i in range(40)]).save_midi(midi)
    png = tmp_path / "shot.png"
    env = {"QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, str(ROOT / "main.py"), str(midi), "--screenshot", str(png)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    from PySide6.QtGui import QImage

    image = QImage(str(png))
    assert image.width() >= 800 and image.height() >= 500


def test_a_time_signature_the_clip_refuses_is_reported_and_not_applied(window):
    """At 4 ticks per quarter a 1/32 bar is half a tick: the toolbar says why and keeps 4/4."""
    window.document.load(Clip([Note(0, 60, 4, 80)], ppq=4))
    bar = window.transport_bar
    bar.sync_clip_fields()
    bar.numerator.blockSignals(True)
    bar.numerator.setValue(1)
    bar.numerator.blockSignals(False)
    bar.denominator.setCurrentText("32")
    bar._commit_time_signature()
    ts = window.document.clip.time_signature
    assert (ts.numerator, ts.denominator) == (4, 4)
    assert (bar.numerator.value(), bar.denominator.currentText()) == (4, "4")
    assert "Time signature not changed" in window.statusBar().currentMessage()
