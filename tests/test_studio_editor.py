"""Piano-roll editing through the real widgets: mouse, keys, actions, undo/redo."""

import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from test_studio_support import (  # noqa: F401 - fixtures
    boxes,
    cell_point,
    click,
    drag,
    make_window,
    mouse,
    note_point,
    sketch,
    wheel,
    window,
)

from engine.music import Clip, Note
from engine.project import Project
from studio.editor import operations as ops
from studio.editor.clipboard import put_on_clipboard
from studio.editor.notegrid import Tool

PPQ = 480


def load(window, clip):
    window.load_project(Project(clip=clip), None)
    window.editor.grid.scroll_to_tick(0, margin_px=0)
    window.editor.grid.scroll_to_pitch(62)
    QApplication.processEvents()
    return window.editor.grid


def test_draw_note_snaps_and_undoes(window):
    grid = load(window, Clip())
    window.set_tool(Tool.DRAW)
    window.editor.set_snap("1/8")
    click(grid.viewport(), cell_point(grid, PPQ * 1.3, 64))  # lands inside the 3rd eighth
    assert window.clip.notes == [Note(PPQ, 64, PPQ // 2, grid.draw_velocity)]
    assert window.undo_stack.count() == 1
    window.undo_stack.undo()
    assert window.clip.notes == []
    window.undo_stack.redo()
    assert len(window.clip.notes) == 1


def test_draw_drag_sets_length_in_one_undo_step(window):
    grid = load(window, Clip())
    window.set_tool(Tool.DRAW)
    window.editor.set_snap("1/4")
    drag(grid.viewport(), cell_point(grid, 0, 60), cell_point(grid, PPQ * 2.9, 60))
    assert window.clip.notes == [Note(0, 60, PPQ * 3, grid.draw_velocity)]
    assert window.undo_stack.count() == 1
    window.undo_stack.undo()
    assert window.clip.notes == []


def test_move_with_mouse_snaps_to_grid(window):
    grid = load(window, sketch(4))
    window.editor.set_snap("1/4")
    note = window.clip.notes[1]
    start = note_point(grid, note)
    end = QPointF(start.x() + PPQ * 1.1 * grid.geo.px_per_tick, start.y() - 2 * grid.geo.row_height)
    drag(grid.viewport(), start, end)
    moved = Note(note.start + PPQ, note.pitch + 2, note.duration, note.velocity)
    assert moved in window.clip.notes and note not in window.clip.notes
    assert window.selection == [moved]
    assert window.undo_stack.count() == 1  # the whole drag is one step
    window.undo_stack.undo()
    assert note in window.clip.notes and moved not in window.clip.notes


def test_alt_drag_moves_without_snap(window):
    grid = load(window, sketch(2))
    window.editor.set_snap("1/4")
    note = window.clip.notes[0]
    start = note_point(grid, note)
    dx = 100 * grid.geo.px_per_tick  # 100 ticks, far from a quarter
    drag(grid.viewport(), start, QPointF(start.x() + dx, start.y()), mods=Qt.AltModifier)
    (moved,) = window.selection
    assert abs(moved.start - (note.start + 100)) <= 2


def test_resize_from_the_end(window):
    grid = load(window, sketch(2))
    window.editor.set_snap("1/16")
    note = window.clip.notes[0]
    start = note_point(grid, note, "end")
    end = QPointF(grid.geo.tick_to_x(PPQ * 1.5), start.y())
    drag(grid.viewport(), start, end)
    assert Note(note.start, note.pitch, PPQ * 3 // 2, note.velocity) in window.clip.notes


def test_click_select_shift_add_ctrl_toggle_and_rubber_band(window):
    grid = load(window, sketch(6))
    notes = window.clip.notes
    vp = grid.viewport()
    click(vp, note_point(grid, notes[0]))
    assert window.selection == [notes[0]]
    click(vp, note_point(grid, notes[2]), mods=Qt.ShiftModifier)
    assert window.selection == [notes[0], notes[2]]
    click(vp, note_point(grid, notes[0]), mods=Qt.ControlModifier)
    assert window.selection == [notes[2]]
    click(vp, cell_point(grid, PPQ * 40, 100))  # empty space clears
    assert window.selection == []
    # Rubber band over notes 1..3 (pitches 61..63, starts 1..3 quarters).
    a = QPointF(grid.geo.tick_to_x(PPQ * 0.9), grid.geo.pitch_to_y(64))
    b = QPointF(grid.geo.tick_to_x(PPQ * 3.1), grid.geo.pitch_to_y(60) - 1)
    drag(vp, a, b)
    assert window.selection == notes[1:4]
    assert window.undo_stack.count() == 0  # selecting is not an edit


def test_delete_key_right_click_and_erase_tool(window):
    grid = load(window, sketch(5))
    notes = list(window.clip.notes)
    window.document.set_selection(notes[:2])
    grid.setFocus()
    QTest.keyClick(grid, Qt.Key_Delete)
    assert window.clip.notes == notes[2:]
    click(grid.viewport(), note_point(grid, notes[2]), button=Qt.RightButton)
    assert window.clip.notes == notes[3:]
    window.set_tool(Tool.ERASE)
    drag(grid.viewport(), note_point(grid, notes[3]), note_point(grid, notes[4]), steps=20)
    assert window.clip.notes == []
    window.undo_stack.undo()  # the erase drag is one step
    assert window.clip.notes == notes[3:]
    window.undo_stack.undo()
    window.undo_stack.undo()
    assert window.clip.notes == notes


def test_transpose_and_nudge_with_arrow_keys(window):
    grid = load(window, sketch(3))
    window.editor.set_snap("1/8")
    n = window.clip.notes[1]
    window.document.set_selection([n])
    grid.setFocus()
    QTest.keyClick(grid, Qt.Key_Up)
    QTest.keyClick(grid, Qt.Key_Up, Qt.ShiftModifier)
    QTest.keyClick(grid, Qt.Key_Right)
    QTest.keyClick(grid, Qt.Key_Right)
    QTest.keyClick(grid, Qt.Key_Left)
    expected = Note(n.start + PPQ // 2, n.pitch + 13, n.duration, n.velocity)
    assert window.selection == [expected]
    assert expected in window.clip.notes
    for _ in range(5):
        window.undo_stack.undo()
    assert n in window.clip.notes


def test_transpose_out_of_range_is_refused_not_clamped(window):
    grid = load(window, Clip([Note(0, 120, 100, 80), Note(0, 60, 100, 80)]))
    window.document.select_all()
    grid.setFocus()
    QTest.keyClick(grid, Qt.Key_Up, Qt.ShiftModifier)
    assert [n.pitch for n in window.clip.notes] == [60, 120]
    assert window.undo_stack.count() == 0


def test_velocity_lane_drag_and_wheel(window):
    grid = load(window, sketch(3))
    lane = window.editor.velocity_lane
    note = window.clip.notes[0]
    x = grid.geo.tick_to_x(note.start)
    y_for_100 = lane.height() - 1 - (lane.height() - 5) * 100 / 127
    drag(lane, QPointF(x, 10), QPointF(x, y_for_100))
    changed = [n for n in window.clip.notes if n.start == note.start][0]
    assert abs(changed.velocity - 100) <= 2
    assert window.undo_stack.count() == 1
    # Alt+wheel over a note in the grid: +4 per notch, a burst is one undo step.
    target = window.clip.notes[1]
    for _ in range(3):
        wheel(grid.viewport(), note_point(grid, target), 120, Qt.AltModifier)
    changed = [n for n in window.clip.notes if n.start == target.start][0]
    assert changed.velocity == target.velocity + 12
    assert window.undo_stack.count() == 2


def test_velocity_keys_on_selection(window):
    grid = load(window, sketch(3))
    window.document.select_all()
    grid.setFocus()
    QTest.keyClick(grid, Qt.Key_Up, Qt.ControlModifier)
    assert [n.velocity for n in window.clip.notes] == [68, 69, 70]


def test_copy_paste_at_playhead_and_duplicate(window):
    load(window, sketch(3))
    notes = list(window.clip.notes)
    window.document.set_selection(notes[:2])
    window.editor.act_copy.trigger()
    mime = QApplication.clipboard().mimeData()
    assert mime.hasFormat("audio/midi") and bytes(mime.data("audio/midi")).startswith(b"MThd")
    window.transport.seek(PPQ * 8)
    window.editor.act_paste.trigger()
    pasted = [Note(n.start + PPQ * 8, n.pitch, n.duration, n.velocity) for n in notes[:2]]
    assert all(p in window.clip.notes for p in pasted)
    assert window.selection == pasted
    window.editor.set_snap("1/4")
    window.editor.act_duplicate.trigger()
    dup = [Note(n.start + PPQ * 2, n.pitch, n.duration, n.velocity) for n in pasted]
    assert window.selection == dup
    assert len(window.clip.notes) == 7
    window.editor.act_cut.trigger()
    assert len(window.clip.notes) == 5
    window.undo_stack.undo()
    window.undo_stack.undo()
    window.undo_stack.undo()
    assert window.clip.notes == notes


def test_paste_from_foreign_midi_clipboard(window):
    from PySide6.QtCore import QMimeData

    load(window, Clip())
    foreign = Clip([Note(96, 70, 48, 100)], 96)  # another app, another PPQ
    mime = QMimeData()
    mime.setData("audio/midi", foreign.to_midi_bytes())
    put_on_clipboard(mime)
    window.editor.paste(at_tick=0)
    assert window.clip.notes == [Note(0, 70, 240, 100)]


def test_ctrl_z_and_ctrl_shift_z_shortcuts(window):
    grid = load(window, sketch(2))
    window.document.select_all()
    grid.setFocus()
    QTest.keyClick(grid, Qt.Key_Delete)
    assert window.clip.notes == []
    QTest.keyClick(grid, Qt.Key_Z, Qt.ControlModifier)
    assert len(window.clip.notes) == 2
    QTest.keyClick(grid, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert window.clip.notes == []


def test_tempo_and_time_signature_are_undoable(window):
    load(window, sketch(2))
    bar = window.transport_bar
    bar.tempo.setValue(95.5)
    assert window.clip.bpm == 95.5
    bar.numerator.setValue(3)
    assert (window.clip.time_signature.numerator, window.clip.time_signature.denominator) == (3, 4)
    window.undo_stack.undo()
    assert window.clip.time_signature.numerator == 4
    assert bar.numerator.value() == 4  # the field follows undo
    window.undo_stack.undo()
    assert window.clip.bpm == 120.0 and bar.tempo.value() == 120.0


def test_snap_choices_include_triplets_and_off():
    labels = [label for label, _ in ops.SNAP_CHOICES]
    for label in ("1/4", "1/8", "1/16", "1/32", "1/8T", "1/16T", "Off"):
        assert label in labels
    assert ops.snap_step("1/8T", 480) == 160
    assert ops.snap_tick(170, 160) == 160
    assert ops.snap_tick(170, ops.snap_step("Off", 480)) == 170
    assert ops.snap_tick(239, 120, mode="floor") == 120


def test_quantize_selection(window):
    grid = load(window, Clip([Note(130, 60, 100, 80), Note(250, 62, 100, 80)]))
    window.editor.set_snap("1/8")
    window.document.select_all()
    grid.setFocus()
    QTest.keyClick(grid, Qt.Key_Q)
    assert [n.start for n in window.clip.notes] == [240, 240]


def test_moving_onto_another_note_is_reversible(window):
    grid = load(window, Clip([Note(0, 60, 480, 80), Note(480, 60, 240, 70)]))
    window.editor.set_snap("1/4")
    a, b = window.clip.notes
    start = note_point(grid, b)
    # Drag b over a (merged there), then keep going: a must come back.
    mouse(grid.viewport(), "press", start)
    mouse(grid.viewport(), "move", QPointF(start.x() - 480 * grid.geo.px_per_tick, start.y()))
    assert len(window.clip.notes) == 1
    mouse(grid.viewport(), "move", QPointF(start.x() + 480 * grid.geo.px_per_tick, start.y()))
    mouse(grid.viewport(), "release", QPointF(start.x() + 480 * grid.geo.px_per_tick, start.y()))
    assert a in window.clip.notes and Note(960, 60, 240, 70) in window.clip.notes
    window.undo_stack.undo()
    assert window.clip.notes == [a, b]


def test_zoom_keeps_anchor_and_ctrl_wheel_zooms(window):
    grid = load(window, sketch(8))
    geo = grid.geo
    before = geo.px_per_quarter
    anchor = QPointF(300, 100)
    tick_before = geo.x_to_tick(anchor.x())
    wheel(grid.viewport(), anchor, 120, Qt.ControlModifier)
    assert geo.px_per_quarter > before
    assert abs(geo.x_to_tick(anchor.x()) - tick_before) < 2
    rows = geo.row_height
    wheel(grid.viewport(), anchor, 120, Qt.ControlModifier | Qt.ShiftModifier)
    assert geo.row_height == rows + 1


def test_process_exits_cleanly_with_copied_notes_on_the_clipboard(tmp_path):
    """Copying notes and quitting must not crash on exit (Qt would free Python-made clipboard data
    after Python has shut down); the text the data carried stays on the clipboard."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "copy_and_quit.py"
    script.write_text(
        "from PySide6.QtCore import QMimeData\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from engine.music import Clip, Note\n"
        "from studio.editor.clipboard import notes_to_mime, put_on_clipboard\n"
        "import atexit\n"
        "app = QApplication([])\n"
        "# registered before the clipboard's own release, so it runs after it (atexit is LIFO)\n"
        "atexit.register(lambda: print('clipboard text:', QApplication.clipboard().text()))\n"
        "put_on_clipboard(notes_to_mime([Note(0, 60, 480, 90)], Clip()))\n"
        "mime = QMimeData(); mime.setText('kept'); put_on_clipboard(mime)\n"
    )
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, str(script)], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "clipboard text: kept" in proc.stdout


def test_dragged_midi_keeps_its_place_on_the_bar_grid(qapp):
    """Song 307's case: a phrase whose first note is on beat 2¼ of its bar (1.25 beats in) must not start
    1.25 beats early in the DAW; the file carries the tempo and metre, and another program reads it."""
    import mido

    from engine.music import TempoChange, TimeSignature
    from studio.editor.clipboard import MIME_MIDI, drag_mime

    source = Clip([Note(3 * 3 * PPQ + 600, 64, 240, 90), Note(3 * 3 * PPQ + 1440, 67, 480, 80),
                   Note(4 * 3 * PPQ + 120, 60, 2000, 70)], PPQ, [TempoChange(0, 96.0)], [TimeSignature(0, 3, 4)])
    mime = drag_mime(source.notes, source, "candidate 2")
    path = mime.urls()[0].toLocalFile()
    assert path.endswith("candidate 2.mid")
    mid = mido.MidiFile(path)  # "another program's view"
    events, now = [], 0
    for msg in mido.merge_tracks(mid.tracks):
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            events.append((now * PPQ // mid.ticks_per_beat, msg.note))
        elif msg.type == "set_tempo":
            assert mido.tempo2bpm(msg.tempo) == pytest.approx(96.0)
        elif msg.type == "time_signature":
            assert (msg.numerator, msg.denominator) == (3, 4)
    assert events == [(600, 64), (1440, 67), (3 * PPQ + 120, 60)]  # from bar 4's line: leading rest kept
    assert bytes(mime.data(MIME_MIDI)) == open(path, "rb").read()
