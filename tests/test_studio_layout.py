"""A musician's first hour (offscreen): panels fit common screens, the wheel scrolls panels, the missing-MAA
notice is in sight with its actions, Export MIDI never proposes the original, the view comes back with
the project, and a screenshot run needs no screen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QPointF
from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel, QScrollArea, QWidget
from test_studio_support import boxes, make_window, sketch, wheel, window  # noqa: F401 - fixtures

from engine.project import Project

SHOTS = Path(os.environ.get("SMART_TEST_SHOTS", "/tmp/smart-layout-shots"))
MISSING = {"maa": {"status": "missing", "reason": "MAA weights not installed (test)"}}


def clipped(page: QWidget, viewport_width: int) -> list[str]:
    """Visible controls narrower than they need, or reaching past the visible width."""
    out = []
    for w in page.findChildren(QWidget):
        if not w.isVisibleTo(page) or not isinstance(w, (QAbstractButton, QComboBox, QLabel)):
            continue
        if isinstance(w, QLabel) and w.wordWrap():
            need = 0
        else:
            need = w.minimumSizeHint().width()
        right = w.mapTo(page, QPoint(w.width(), 0)).x()
        if w.width() + 1 < need or right > viewport_width + 1:
            out.append(f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!r}: {w.width()} px of {need}, "
                       f"right edge {right} > {viewport_width}")
    return out


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)])
def test_panels_fit_the_screen_without_clipping(window, qtbot, size):
    window.resize(*size)
    window.load_project(Project(clip=sketch(16)), None)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for panel in (window.generate_panel, window.train_panel):
        panel.raise_()
        qtbot.wait(30)
        scroll = panel.findChild(QScrollArea)
        page = scroll.widget()
        assert page.minimumSizeHint().width() <= scroll.viewport().width(), "the panel needs a horizontal scrollbar"
        assert clipped(page, scroll.viewport().width()) == []
        path = SHOTS / f"{panel.objectName()}-{size[0]}x{size[1]}.png"
        assert window.grab().save(str(path))
        print("screenshot:", path)


def test_preset_change_keeps_the_start_button_in_place(window, qtbot):
    panel = window.train_panel
    panel.raise_()
    qtbot.wait(30)
    y = panel.btn_start.mapTo(panel, QPoint(0, 0)).y()
    for name in panel.catalogue["presets"]:
        panel.apply_preset(name)
        qtbot.wait(10)
        assert panel.btn_start.mapTo(panel, QPoint(0, 0)).y() == y, name


def test_wheel_scrolls_the_panel_unless_the_widget_has_focus(window, qtbot):
    window.resize(1366, 768)
    panel = window.train_panel
    panel.raise_()
    qtbot.wait(30)
    scroll = panel.findChild(QScrollArea)
    bar = scroll.verticalScrollBar()
    assert bar.maximum() > 0
    combo, before = panel.reward_combo, panel.reward_combo.currentIndex()
    wheel(combo, QPointF(10, 5), -120)
    assert combo.currentIndex() == before and bar.value() > 0  # the panel scrolled, the reward stayed
    bar.setValue(0)
    spin, steps = panel.spin_steps, panel.spin_steps.value()
    wheel(spin, QPointF(10, 5), 120)
    assert spin.value() == steps
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus, timeout=2000)
    wheel(spin, QPointF(10, 5), 120)
    assert spin.value() == steps + 1  # focused: the wheel edits it, as in a DAW's inspector


def test_missing_maa_is_said_where_the_eye_is_and_offline_rewards_are_the_default(window, qtbot):
    gen, train = window.generate_panel, window.train_panel
    gen.raise_()
    gen.host.health = MISSING  # what a host without MAA weights reports
    gen.host.changed.emit()
    notice = gen.maa
    assert notice.isVisible() and "not installed" in notice.label.text() and "$SMART" not in notice.label.text()
    assert notice.btn_download.isVisible() and "MB" in notice.btn_download.text() and notice.btn_file.isVisible()
    page = gen.findChild(QScrollArea).widget()
    assert notice.mapTo(page, QPoint(0, 0)).y() < gen.spin_candidates.mapTo(page, QPoint(0, 0)).y()  # on top
    assert not gen.chk_score.isEnabled() and not gen.chk_score.isChecked()
    assert gen.options.score  # the musician's choice is kept for a host with MAA
    # Train: the MAA rewards are greyed out, the reward is an offline one, Start works.
    assert not train.reward_needs_maa()
    model = train.reward_combo.model()
    for i in range(train.reward_combo.count()):
        needs = train.reward_combo.itemData(i) in ("maa-ce", "maa-cu", "maa-pc", "maa-pq", "weighted")
        assert model.item(i).isEnabled() is not needs
    train.apply_preset("paper")  # the paper's preset asks for MAA CE: the panel keeps what works here
    assert not train.reward_needs_maa() and train.btn_start.isEnabled()
    train.reward_combo.setCurrentIndex(train.reward_combo.findData("maa-ce"))
    assert not train.btn_start.isEnabled() and "not installed" in train.maa_label.text()
    gen.host.health = None
    gen.host.changed.emit()
    assert notice.btn_download.isHidden()


def test_export_midi_never_proposes_the_imported_file(window, tmp_path):
    src = tmp_path / "song.mid"
    sketch(8).save_midi(src)
    assert window.open_path(src, ask=False)
    proposed = window.export_midi_suggestion()
    assert proposed != src and proposed.parent == src.parent and proposed.suffix == ".mid"
    assert window.save_to(tmp_path / "song.smartproj")
    assert window.export_midi_suggestion().resolve() != src.resolve()


def test_zoom_and_scroll_come_back_with_the_project(window, qtbot, tmp_path):
    window.load_project(Project(clip=sketch(64)), None)
    window.editor.zoom_x(2.0)
    window.editor.zoom_y(4)
    window.editor.grid.scroll_to_tick(16 * 480)
    window.editor.grid.scroll_to_pitch(40)
    state = window.editor.view_state()
    path = tmp_path / "v.smartproj"
    assert window.save_to(path)
    window.new_sketch()
    assert window.editor.view_state() != state
    assert window.open_path(path, ask=False)
    assert window.editor.view_state() == state
    assert not window.editor.restore_view({"px_per_quarter": "wide"})  # a damaged view is ignored


def test_screenshot_needs_no_screen(tmp_path):
    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "s.mid"
    sketch(8).save_midi(src)
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    png = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, "main.py", str(src), "--screenshot", str(png)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.stat().st_size > 10_000


def test_host_dialog_shows_its_placeholders_in_full(window, qtbot):
    from studio.generate.hostdialog import HostDialog

    dlg = HostDialog("local", "", "", "", window)
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    for edit in (dlg.model_dir, dlg.url, dlg.token):
        assert edit.width() >= edit.fontMetrics().horizontalAdvance(edit.placeholderText()) + 8, edit.placeholderText()
    path = SHOTS / "host-dialog.png"
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert dlg.grab().save(str(path))
    dlg.reject()
