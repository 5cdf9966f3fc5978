"""A musician's first hour (offscreen): panels fit common screens, the wheel scrolls panels, the missing-MAA
notice is in sight with its actions, Export MIDI never proposes the original, the view comes back with
the project, and a screenshot run needs no screen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel, QScrollArea, QWidget
from test_studio_support import boxes, make_window, sketch, wheel, window  # noqa: F401 - fixtures

from engine.api import HealthReply
from engine.job_api import JobCheckpoint, JobInfo, JobState, JobStep
from engine.project import Project

SHOTS = Path(os.environ.get("SMART_TEST_SHOTS", "/tmp/smart-layout-shots"))
MISSING = HealthReply(maa={"status": "missing", "reason": "MAA weights not installed (test)"})


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


def test_window_opens_within_the_screen_and_remembers_its_size(qtbot, tmp_path, boxes, monkeypatch):
    """It always opened at 1400×860: on a 1366×768 laptop the status bar, dock tabs and right edge were off
    screen (issue 24). A first start fits the available area; later starts get the musician's size back."""
    from PySide6.QtCore import QSettings

    from studio.mainwindow import MainWindow

    monkeypatch.setenv("SMART_PREFERENCES_DIR", str(tmp_path / "profile-preferences"))
    ini = str(tmp_path / "settings.ini")

    def start():
        w = MainWindow(settings=QSettings(ini, QSettings.IniFormat), recovery_dir=tmp_path / "recovery",
                       audio=False)
        qtbot.addWidget(w)
        w.show()
        qtbot.waitExposed(w)
        return w

    first = start()
    area = first.screen().availableGeometry()
    assert area.width() < 1400 or area.height() < 860, "the test screen should be smaller than the preferred size"
    assert first.width() <= area.width() and first.height() <= area.height(), (first.geometry(), area)
    first.resize(area.width() - 100, area.height() - 80)
    qtbot.wait(10)
    first.shutdown()
    again = start()
    assert (again.width(), again.height()) == (area.width() - 100, area.height() - 80)
    again.shutdown()


def test_wheel_over_the_toolbar_changes_nothing_without_focus(window, qtbot):
    """A stray wheel over the toolbar changed Snap, the tempo and the time signature (4/4 → 1/4 re-bars
    the song) (issue 24): only a control the musician focused (click or Tab) follows the wheel."""
    bar = window.transport_bar
    window.editor.setFocus()
    edits = window.undo_stack.count()
    before = (bar.tempo.value(), bar.numerator.value(), bar.denominator.currentIndex(),
              window.snap_combo.currentIndex())
    for widget in (bar.tempo, bar.numerator, bar.denominator, window.snap_combo):
        wheel(widget, QPointF(8, 5), -120)
        wheel(widget, QPointF(8, 5), 120)
        wheel(widget, QPointF(8, 5), 120)
        assert widget.focusPolicy() == Qt.StrongFocus, "the wheel must not give a control the focus"
    assert (bar.tempo.value(), bar.numerator.value(), bar.denominator.currentIndex(),
            window.snap_combo.currentIndex()) == before
    assert window.undo_stack.count() == edits
    bar.tempo.setFocus()
    qtbot.waitUntil(bar.tempo.hasFocus, timeout=2000)
    wheel(bar.tempo, QPointF(8, 5), 120)
    assert bar.tempo.value() == before[0] + 1  # focused: the wheel edits it


def test_wheel_rule_holds_in_dialogs_made_later(window, qtbot):
    from PySide6.QtWidgets import QDialog, QSpinBox, QVBoxLayout

    dialog = QDialog(window)
    qtbot.addWidget(dialog)
    spin = QSpinBox(dialog)
    QVBoxLayout(dialog).addWidget(spin)
    dialog.show()
    qtbot.waitExposed(dialog)
    wheel(spin, QPointF(8, 5), 120)
    assert spin.value() == 0


def test_after_continue_the_candidate_actions_are_in_sight_at_1366x768(window, qtbot):
    """After Continue only the candidate table was visible: Solo, In context, A/B, Compare and Accept needed
    scrolling (issue 24). The settings fold away and the actions sit by the list."""
    from engine.music import Note
    from studio.generate.history import CONTINUE, Candidate

    window.resize(1366, 768)
    window.load_project(Project(clip=sketch(16)), None)
    panel = window.generate_panel
    panel.raise_()
    panel._adopt_project()
    assert panel.settings_section.expanded()
    start = 16 * 480
    items = [Candidate(index=k, request="r", mode=CONTINUE, status="ready", span=(start, start + 8 * 480),
                       notes=[Note(start + j * 240, 60 + k + j % 5, 200, 80) for j in range(8)]) for k in range(4)]
    panel.settings_section.set_expanded(False)  # what Continue does when it starts (panel._start)
    panel.session.show(items)
    panel.model.set_items(items)
    panel._on_finished("4 candidates", False)
    qtbot.waitUntil(lambda: panel.settings_section.height() < 2 * panel.settings_section.header.height() + 8,
                    timeout=3000)
    assert "4 × " in panel.settings_section.header.text()  # folded: its values in one line
    scroll = panel.findChild(QScrollArea)
    assert scroll.verticalScrollBar().value() == 0
    for button in (panel.btn_solo, panel.btn_context, panel.btn_ab, panel.btn_accept, panel.btn_prefer_a,
                   panel.btn_prefer_b, panel.btn_prefer_tie, panel.btn_discard):
        seen = button.visibleRegion().boundingRect()
        assert seen.size() == button.size(), f"{button.text()!r}: {seen} of {button.size()} in sight"
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert window.grab().save(str(SHOTS / "generate-after-continue-1366x768.png"))
    rows = panel.table.visibleRegion().boundingRect()
    assert rows.height() >= 4 * 22, "the list shows its candidates"
    assert panel.compare_hint.isVisible() and "better" in panel.compare_hint.text()
    panel.settings_section.set_expanded(True)
    assert panel.spin_candidates.isVisible()


def test_train_plot_titles_fit_and_a_new_job_gets_fresh_axes(window, qtbot):
    """The Train panel's reward title was cut ("…offline, no MA") and a taste tune's plots kept the previous
    job's axes (issue 24)."""
    window.resize(1366, 768)
    panel = window.train_panel
    panel.raise_()
    panel.reward_combo.setCurrentIndex(panel.reward_combo.findData("notes"))
    qtbot.wait(30)
    plots = panel.plots
    assert plots.caption.isVisible() and plots.caption.text().endswith("(offline, no MAA)")
    for key, w in plots.widgets.items():
        label = w.getPlotItem().titleLabel
        assert label.item.boundingRect().width() <= w.width(), (key, plots.title_of(key))
    for step in (1, 2, 3):  # a long GRPO job with large rewards
        plots.add(JobStep(step=step * 100, reward_mean=50.0 * step, kl=3.0, diversity=0.5, completion_tokens=900))
    plots.clear()
    plots.set_layout("dpo")
    plots.add(JobStep(step=1, loss=0.69, rewards_accuracies=0.5, rewards_margins=0.01, rewards_chosen=0.02,
                      rewards_rejected=-0.01))
    plots.add(JobStep(step=2, loss=0.6, rewards_accuracies=0.75, rewards_margins=0.02, rewards_chosen=0.03,
                      rewards_rejected=-0.02))
    qtbot.wait(30)
    x_range, y_range = plots.widgets["loss"].getPlotItem().viewRange()
    assert x_range[1] < 50 and y_range[1] < 5, "the DPO curves are drawn on the previous job's axes"


def test_cancel_before_the_first_checkpoint_disables_resume(window):
    """Cancel on a GRPO job left Resume enabled when no checkpoint existed (issue 24)."""
    panel = window.train_panel
    panel.host.state, panel.host.client = "connected", object()  # connected, as far as the buttons go
    try:
        panel.job_id, panel.job_state = "job-1", JobState.CANCELLED
        panel.job_info = JobInfo(id="job-1", state="cancelled", kind="grpo", checkpoints=[])
        panel._sync_buttons()
        assert not panel.btn_resume.isEnabled() and "nothing to resume" in panel.btn_resume.toolTip()
        panel.job_info.checkpoints = [JobCheckpoint(step=10, path="/jobs/job-1/checkpoints/step-10")]
        panel._sync_buttons()
        assert panel.btn_resume.isEnabled()
        panel.job_info = JobInfo(id="job-1", state="cancelled", kind="taste-tune", checkpoints=[],
                                 config={"kind": "taste-tune", "method": "dpo"})
        panel._sync_buttons()
        assert panel.btn_resume.isEnabled()  # a taste tune starts over, and says so
    finally:
        panel.host.state, panel.host.client = "disconnected", None


def test_closing_with_a_local_job_asks_and_stops_it_only_when_told(window, qtbot, monkeypatch):
    """Closing silently killed a running local training job, which then restarted by itself on the next
    launch (issue 24): the studio says what closing does, keeps running when asked, and cancels the job
    on the host (so it does not come back) when told to stop."""
    from PySide6.QtWidgets import QMessageBox

    from studio.host.connection import LOCAL

    class Host:
        cancelled: list[str] = []

        def cancel_job(self, job_id):
            self.cancelled.append(job_id)
            return JobInfo(id=job_id, state="cancelled")

        def close(self):
            pass

    host = Host()
    panel = window.train_panel
    panel.host.mode, panel.host.state, panel.host.client = LOCAL, "connected", host
    panel._listed_jobs = [JobInfo(id="j1", state="running", name="song · my taste (dpo)",
                                  progress={"step": 3, "steps": 40}),
                          JobInfo(id="j2", state="queued", name="paper", progress={"step": 0, "steps": 200})]
    asked = []

    def answer(text):
        def exec_(box):
            asked.append(box.text() + " " + box.informativeText())
            next(b for b in box.buttons() if b.text() == text).click()
            return 0
        return exec_

    monkeypatch.setattr(QMessageBox, "exec", answer("Keep running"))
    assert not window.close()
    assert window.isVisible() and host.cancelled == []
    assert "j1" in asked[0] and "ends when the studio closes" in asked[0]
    monkeypatch.setattr(QMessageBox, "exec", answer("Stop the job and quit"))
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    assert host.cancelled == ["j1", "j2"]


def test_a_queued_job_says_what_it_waits_for(window):
    panel = window.train_panel
    panel._listed_jobs = [JobInfo(id="j1", state="running", name="my taste (dpo)", progress={"step": 3, "steps": 40})]
    panel.job_id, panel.job_state = "j2", JobState.QUEUED
    panel.job_info = JobInfo(id="j2", state="queued", queue_position=1)
    panel._show_progress()
    text = panel.job_label.text()
    assert "one job at a time" in text and "j1" in text and "my taste (dpo)" in text


def test_a_wav_is_never_kept_as_the_maa_file(make_window, qtbot, tmp_path):
    """"Use a file I have…" accepted a WAV: saved as maaPath, it crashed every later host start and no screen
    could undo it (issue 24). The file is checked before it is kept, a bad saved one is dropped at start
    (the host starts without it), and the Host dialog shows the MAA file with a way to clear it."""
    from PySide6.QtCore import QSettings

    from studio.generate.hostdialog import HostDialog

    wav = tmp_path / "take.wav"
    wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
    settings.setValue("generate/maaPath", str(wav))
    settings.sync()
    window = make_window()
    panel = window.generate_panel
    assert panel.host.maa_path is None and not window.settings.value("generate/maaPath")
    assert "take.wav" in panel.maa.label.text() and "starts without it" in panel.maa.label.text()

    chosen = []
    panel.maa.weights_chosen.connect(chosen.append)
    assert not panel.maa.use_weights(str(wav))
    assert chosen == [] and "take.wav" in panel.maa.label.text() and "Nothing was changed" in panel.maa.label.text()

    dlg = HostDialog("local", "", "", "", window, maa_path=str(wav))
    qtbot.addWidget(dlg)
    dlg.show()
    qtbot.waitExposed(dlg)
    assert dlg.maa_path.text() == str(wav) and dlg.maa_note.isVisible() and "take.wav" in dlg.maa_note.text()
    assert not dlg.choose_maa(str(tmp_path / "notes.txt"))
    assert dlg.maa_file() == str(wav)
    qtbot.mouseClick(dlg.maa_clear, Qt.LeftButton)
    assert dlg.maa_file() == "" and not dlg.maa_clear.isEnabled()
    dlg.reject()


def test_the_default_train_preset_fits_the_host_and_says_how_long(window):
    """The default preset was the paper's (200 steps × 8 × 8: hours on a CPU) even on a CPU host (issue 24)."""
    panel = window.train_panel
    assert panel.host.mode == "local" and not panel.host_has_gpu()
    assert panel.preset_combo.currentData() == "quick"
    assert "min on this host (CPU, estimated)" in panel.preset_note.text()
    paper = panel.preset_combo.itemData(panel.preset_combo.findData("paper"), Qt.ToolTipRole)
    assert " h on this host" in paper or "days on this host" in paper
    panel._on_catalogue({**panel.catalogue, "cuda": True})  # a GPU host says so: the paper's run
    assert panel.preset_combo.currentData() == "paper" and "GPU" in panel.preset_note.text()
    panel.preset_combo.setCurrentIndex(panel.preset_combo.findData("smoke"))
    panel._on_preset_picked(panel.preset_combo.currentIndex())
    panel._on_catalogue({**panel.catalogue, "cuda": False})
    assert panel.preset_combo.currentData() == "smoke"  # the musician's pick stays
