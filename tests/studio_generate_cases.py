"""The Generate panel against real hosts on 127.0.0.1 (tiny random model; small random-weight MAA).

One local host subprocess is started through the panel's own HostConnection (local mode, as the studio
does) and shared by the tests, which connect their windows to it as a remote host (URL + token); a
second, in-process host has no MAA weights.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from conftest import serve
from test_studio_support import boxes, make_window, window  # noqa: F401 - fixtures

from engine.music import Clip, Note
from engine.project import Project, load_project
from studio.generate.audition import SOLO
from studio.host.connection import LOCAL, REMOTE, HostConnection
from studio.generate.options import GenerateOptions, allowed_pitches

PPQ = 480


def sketch_clip(bars: int = 4) -> Clip:
    pitches = [60, 64, 67, 72, 62, 65, 69, 74, 64, 67, 71, 76, 60, 64, 67, 72]
    return Clip([Note(i * PPQ, pitches[i % 16], 400, 80) for i in range(4 * bars)], ppq=PPQ)


def wait_for(app, cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from engine.policy import Policy

    root = tmp_path_factory.mktemp("generate-models")
    Policy.create("tiny", seed=0).save(root / "tiny")
    return root / "tiny"


@pytest.fixture(scope="module")
def local_host(qapp, model_dir, tmp_path_factory):
    """The panel's local-host path: a `smart serve` subprocess with the tiny model and a random-weight MAA."""
    from engine.scorer import build_maa_model, save_checkpoint_pt

    maa = save_checkpoint_pt(build_maa_model(small=True), tmp_path_factory.mktemp("maa") / "checkpoint.pt")
    conn = HostConnection()
    conn.configure(LOCAL, model_dir=str(model_dir), maa_path=str(maa))
    conn.connect_host()
    assert conn.state == "connecting"
    assert conn.startup_detail().split(" ")[1] == "s"  # "0 s[ — the host's latest log line]": shown while it starts
    assert wait_for(qapp, lambda: conn.state in ("connected", "failed"), 240), "local host did not start"
    assert conn.connected, conn.error
    from engine.fastdecode import int8_weights_available

    # The local host decodes with int8-packed weights on CPU (the `smart serve` default); the label says so.
    assert conn.device() == ("cpu int8" if int8_weights_available() else "cpu") and conn.maa_status() == "random-weights"
    assert conn.model_name().startswith("tiny")
    yield conn
    local = conn.local
    conn.shutdown()
    assert local.process.poll() is not None  # the subprocess is gone


@pytest.fixture(scope="module")
def bare_host(model_dir):
    """A host without MAA weights (in-process, token-protected)."""
    from engine.host.server import create_app
    from engine.policy import Policy

    app = create_app(Policy.load(model_dir), maa_reason="MAA weights not installed (test)", token="bare-token-123")
    with serve(app) as url:
        yield url, "bare-token-123"


def connect(qtbot, win, url: str, token: str):
    panel = win.generate_panel
    panel.set_host(REMOTE, url=url, token=token)
    qtbot.waitUntil(lambda: panel.host.state in ("connected", "failed"), timeout=30000)
    assert panel.host.connected, panel.host.error
    assert "cpu" in panel.host_label.text()  # the connection and the host's device are shown
    return panel


def generate(qtbot, panel, button, candidates=4, bars=2, seed=7):
    panel.spin_candidates.setValue(candidates)
    panel.spin_bars.setValue(bars)
    panel.spin_seed.setValue(seed)
    qtbot.mouseClick(button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not panel.generating and panel.current_request is not None
                    and panel.current_request.status != "running", timeout=60000)
    assert panel.current_request.status == "completed", panel.job_label.text()


# ====================================================================== no host needed
def test_key_lock_and_range_make_allowed_pitches():
    assert allowed_pitches(False, 0, "major", 0, 127) is None
    assert allowed_pitches(True, 2, "minor", 60, 72) == [60, 62, 64, 65, 67, 69, 70, 72]  # D minor
    o = GenerateOptions(key_lock=True, key_root=7, key_scale="major", low=66, high=67)
    assert o.allowed() == [66, 67]
    o.low, o.high, o.key_root = 61, 61, 0
    with pytest.raises(ValueError, match="no pitch"):
        o.validate()


def test_ghost_overlay_paints_translucent_candidate_notes(window, qtbot):
    from PySide6.QtGui import QColor

    grid = window.editor.grid
    grid.scroll_to_pitch(60)
    grid.scroll_to_tick(0, margin_px=0)
    overlay = window.generate_panel.ghosts
    note = Note(PPQ * 2, 60, PPQ * 2, 90)
    geo = grid.geo
    x, y = int(geo.tick_to_x(note.start) + 20), int(geo.pitch_to_y(60) + geo.row_height / 2)
    before = grid.viewport().grab().toImage().pixelColor(x, y)
    overlay.reset_paint_clock()
    fired = []
    overlay.first_painted.connect(fired.append)
    overlay.set_ghost_notes([([note], QColor(255, 0, 0))])
    after = grid.viewport().grab().toImage().pixelColor(x, y)
    assert fired, "painting a ghost note fires first_painted"
    assert after.red() > before.red() + 40 and after != QColor(255, 0, 0)  # red-tinted, not opaque
    overlay.clear()
    assert grid.viewport().grab().toImage().pixelColor(x, y) == before


# ====================================================================== with hosts
def test_continue_streams_auditions_accepts_and_undoes(window, qtbot, local_host):
    panel = connect(qtbot, window, local_host.local.url, local_host.local.token)
    window.load_project(Project(clip=sketch_clip(4)), None)
    doc = window.document
    doc.set_selection([n for n in doc.notes if n.start < 2 * 4 * PPQ])  # bars 1–2
    assert panel.continue_tick() == 2 * 4 * PPQ  # the bar line after the selection (issue 24)
    seen = []  # (request status, ghost notes on the roll) at the first paint that shows ghost notes
    panel.ghosts.first_painted.connect(lambda _t: seen.append((panel.current_request.status,
                                                                panel.ghosts.note_count())))
    panel.spin_candidates.setValue(6)
    panel.spin_bars.setValue(2)
    panel.spin_seed.setValue(11)
    qtbot.mouseClick(panel.btn_continue, Qt.LeftButton)
    assert panel.generating
    qtbot.waitUntil(lambda: not panel.generating, timeout=60000)
    assert panel.current_request.status == "completed", panel.job_label.text()
    # Notes streamed onto the roll (and were painted) before the request was done.
    assert seen and seen[0][0] == "running" and seen[0][1] >= 1
    items = panel.model.items
    assert len(items) <= 6 and all(i.status == "ready" for i in items)
    with_notes = [i for i in items if i.notes]
    assert len(with_notes) >= 2, [len(i.notes) for i in items]
    at = panel.continue_tick()
    for item in with_notes:
        assert all(n.start >= at for n in item.notes)  # continuations start at the continuation point
        assert item.scores is not None and set(item.scores) == {"CE", "CU", "PC", "PQ"}
        assert item.random_weights and item.features["n_notes"] == len(item.notes)
    assert panel.ghosts.note_count() == sum(len(i.notes) for i in items)
    # Random-weight scores are shown, but clearly labelled.
    assert panel.random_warning.isVisible() and "random" in panel.maa.label.text().lower()
    # Best-of-N: sorting by CE puts the highest CE first.
    panel.combo_sort.setCurrentText("CE")
    first = panel.model.items[panel.proxy.mapToSource(panel.proxy.index(0, 0)).row()]
    assert first.scores["CE"] == max(i.scores["CE"] for i in with_notes)

    # Audition in context and solo, then A/B between two candidates.
    a, b = with_notes[0], with_notes[1]
    panel.select_item(a)
    qtbot.mouseClick(panel.btn_context, Qt.LeftButton)
    assert panel.audition.active and window.transport.playing
    heard_in_context = sorted(panel.audition.clip.notes)  # the sketch with `a` where Accept puts it (checked below)
    assert set(heard_in_context) >= {n for n in doc.notes if n.start < at} | set(a.notes)
    qtbot.mouseClick(panel.btn_solo, Qt.LeftButton)
    assert sorted(panel.audition.clip.notes) == sorted(a.notes) and panel.audition.mode == SOLO
    panel.select_item(b)
    panel.ab_toggle()  # hearing a, b picked: switch to b, keeping the playhead
    assert panel.audition.item is b and panel.audition.mode == SOLO
    assert sorted(panel.audition.clip.notes) == sorted(b.notes)
    panel.ab_toggle()
    assert panel.audition.item is a and window.transport.playing
    panel.audition.stop()
    assert not panel.audition.active

    # Accept (default placement: insert): one undo step adds exactly the candidate's notes and moves the
    # music after the continuation point back by whole bars, past the candidate; undo restores the sketch.
    before = list(doc.notes)
    earlier, later = [n for n in before if n.start < at], [n for n in before if n.start >= at]
    assert later and a.span == (at, 4 * 4 * PPQ)  # to the bar line after the point, then 2 bars
    steps = window.undo_stack.count()
    panel.select_item(a)
    qtbot.mouseClick(panel.btn_accept, Qt.LeftButton)
    assert window.undo_stack.count() == steps + 1
    moved = sorted(set(doc.notes) - set(earlier) - set(a.notes))
    shift = moved[0].start - later[0].start
    assert shift > 0 and shift % (4 * PPQ) == 0
    assert moved == [Note(n.start + shift, n.pitch, n.duration, n.velocity) for n in later]
    assert min(n.start for n in moved) >= max(a.span[1], max(n.start for n in a.notes))
    after_accept = list(doc.notes)
    assert after_accept == heard_in_context
    assert set(doc.selection) == set(a.notes)
    assert a not in panel.model.items and a.status == "accepted"
    window.undo_stack.undo()
    assert doc.notes == before
    window.undo_stack.redo()
    assert doc.notes == after_accept

    # The request and its candidates are kept with the project.
    hist = window.project_extras.history[-1]
    assert hist["mode"] == "continue" and hist["status"] == "completed"
    assert hist["settings"]["candidates"] == 6 and hist["settings"]["seed"] == 11
    assert hist["model"]["path"].endswith("tiny") and hist["maa"] == "random-weights"
    assert hist["accepted"] == a.index and len(hist["scores"]) == 6
    stored = [c for c in window.project_extras.candidates if c["request"] == hist["id"]]
    assert {c["status"] for c in stored} >= {"accepted", "ready"}
    assert window.is_modified()
    # The sketch is re-scored off the UI thread: a strip of per-10-s windows, labelled random.
    qtbot.waitUntil(lambda: panel.scorer.scores is not None and panel.scorer.up_to_date, timeout=30000)
    assert panel.scorer.strip.isVisible() and panel.scorer.strip.random_weights
    assert "random weights" in panel.sketch_label.text()


def test_regenerate_selection_only_changes_the_selected_bars(window, qtbot, local_host, tmp_path):
    panel = connect(qtbot, window, local_host.local.url, local_host.local.token)
    window.load_project(Project(clip=sketch_clip(4)), None)
    doc = window.document
    bar = 4 * PPQ
    doc.set_selection([n for n in doc.notes if bar + PPQ <= n.start < 2 * bar])  # notes inside bar 2
    assert panel.infill_span() == (1, 2)
    generate(qtbot, panel, panel.btn_regen, candidates=4, seed=5)
    assert panel.ghosts.region == (bar, 2 * bar)
    items = [i for i in panel.model.items if i.notes]
    assert items, "no infill candidate wrote notes"
    for item in items:
        assert all(bar <= n.start < 2 * bar and n.end <= 2 * bar for n in item.notes)
    before = list(doc.notes)
    steps = window.undo_stack.count()
    assert panel.accept(items[0])
    assert window.undo_stack.count() == steps + 1
    outside = [n for n in before if not bar <= n.start < 2 * bar]
    assert [n for n in doc.notes if not bar <= n.start < 2 * bar] == outside
    assert sorted(n for n in doc.notes if bar <= n.start < 2 * bar) == sorted(items[0].notes)
    window.undo_stack.undo()
    assert doc.notes == before

    # History and candidates survive save / load with the project.
    path = tmp_path / "song.smartproj"
    assert window.save_to(path)
    loaded = load_project(path)
    assert loaded.history == window.project_extras.history
    assert loaded.candidates == window.project_extras.candidates
    assert loaded.history[-1]["mode"] == "infill" and loaded.history[-1]["span_bars"] == [1, 2]
    window.new_sketch()
    qtbot.waitUntil(lambda: panel.model.items == [] and panel.history_tree.topLevelItemCount() == 0)
    assert panel.ghosts.note_count() == 0
    assert window.open_path(path, ask=False)
    qtbot.waitUntil(lambda: panel.history_tree.topLevelItemCount() == len(loaded.history))
    assert {tuple(i.notes) for i in panel.model.items} == {tuple(i.notes) for i in items[1:]}


def test_search_keeps_the_best_beams(window, qtbot, local_host):
    panel = connect(qtbot, window, local_host.local.url, local_host.local.token)
    window.load_project(Project(clip=sketch_clip(2)), None)
    window.document.select_all()
    panel.spin_bars.setValue(2)
    panel.spin_beams.setValue(2)
    panel.spin_expand.setValue(2)
    panel.spin_budget.setValue(60)
    panel.spin_seed.setValue(4)
    panel.combo_reward.setCurrentIndex(panel.combo_reward.findData("in-scale"))
    assert panel.options.search_reward == "in-scale"
    qtbot.mouseClick(panel.btn_search, Qt.LeftButton)
    qtbot.waitUntil(lambda: not panel.generating, timeout=90000)
    hist = window.project_extras.history[-1]
    assert hist["mode"] == "search" and hist["status"] == "completed", panel.job_label.text()
    assert hist["steps"] == 2 and hist["stopped_by"] == "bars"
    rewards = [i.reward for i in panel.model.items]
    assert 1 <= len(rewards) <= 2 and rewards == sorted(rewards, reverse=True)
    at = panel.continue_tick()  # the bar line after the selection: the beams fill bars 3 and 4
    assert at == 2 * 4 * PPQ
    end = window.clip.bar_tick(window.clip.bar_index_at(at) + 2)
    for item in panel.model.items:
        assert all(at <= n.start < end for n in item.notes), (at, item.notes)


def test_without_maa_no_numbers_and_download_fails_clearly(window, qtbot, bare_host, monkeypatch):
    import huggingface_hub.constants

    # No internet here anyway; offline mode makes the hub client fail at once instead of after DNS retries.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    panel = connect(qtbot, window, *bare_host)
    assert panel.host.maa_status() == "missing"
    assert "not installed" in panel.maa.label.text() and panel.maa.btn_download.isVisible()
    assert "378 MB" in panel.maa.btn_download.text()
    window.load_project(Project(clip=sketch_clip(2)), None)
    window.document.select_all()
    generate(qtbot, panel, panel.btn_continue, candidates=3, seed=3)
    assert panel.model.items and all(i.scores is None for i in panel.model.items)
    assert all(i.scores_error for i in panel.model.items if i.notes)
    for row in range(panel.proxy.rowCount()):
        for col in range(2, 6):
            assert panel.proxy.index(row, col).data() == ""  # no numbers in the score columns
    assert not panel.random_warning.isVisible()
    qtbot.wait(50)
    assert panel.scorer.scores is None and not panel.scorer.strip.isVisible()
    # Offline rewards only for search.
    assert [panel.combo_reward.itemData(i) for i in range(panel.combo_reward.count())] == ["in-scale", "density",
                                                                                                 "variety"]
    qtbot.mouseClick(panel.maa.btn_download, Qt.LeftButton)
    qtbot.waitUntil(lambda: not panel.maa.downloading, timeout=30000)
    assert "Download failed" in panel.maa.label.text() and "internet" in panel.maa.label.text()
    assert not panel.maa.use_weights(str(window.project_path or "/nonexistent/checkpoint.pt"))
    assert "no maa checkpoint" in panel.maa.label.text().lower()


@pytest.mark.slow  # a whole generation through the local host; CI runs it (pytest -m slow)
def test_placement_replace_and_empty_space_only(window, qtbot, local_host):
    from studio.generate.placement import EMPTY, REPLACE

    panel = connect(qtbot, window, local_host.local.url, local_host.local.token)
    window.load_project(Project(clip=sketch_clip(4)), None)
    doc, bar = window.document, 4 * PPQ
    window.transport.seek(bar)  # no selection: the playhead (bar 2) is the continuation point
    assert panel.continue_tick() == bar

    # Replace: notes starting in bar 2 give way to the candidate; everything else stays.
    panel.set_placement(REPLACE)
    generate(qtbot, panel, panel.btn_continue, candidates=3, bars=1, seed=21)
    assert panel.ghosts.region == (bar, 2 * bar)  # the span is shaded under the ghosts
    a = next(i for i in panel.model.items if i.notes)
    assert a.span == (bar, 2 * bar) and a.placement == REPLACE
    before = list(doc.notes)
    assert panel.accept(a)
    end = max(2 * bar, doc.clip.bar_tick(doc.clip.bar_index_at(max(n.start for n in a.notes)) + 1))
    assert sorted(n for n in doc.notes if not bar <= n.start < end) == [n for n in before if not bar <= n.start < end]
    assert sorted(n for n in doc.notes if bar <= n.start < end) == sorted(set(a.notes))
    window.undo_stack.undo()
    assert doc.notes == before

    # Empty space only: refused where music is, before anything is generated...
    panel.set_placement(EMPTY)
    request = panel.current_request
    qtbot.mouseClick(panel.btn_continue, Qt.LeftButton)
    assert panel.current_request is request and not panel.generating
    assert "Bar 2 already holds music" in panel.job_label.text()  # the bar the 1-bar span covers
    # ...and after the song it just adds the candidate.
    window.transport.seek(4 * bar)
    generate(qtbot, panel, panel.btn_continue, candidates=2, bars=1, seed=22)
    b = next(i for i in panel.model.items if i.notes)
    assert panel.accept(b)
    assert set(doc.notes) == set(before) | set(b.notes) and all(n.start >= 4 * bar for n in b.notes)
    print("screenshot:", window.grab().save("/tmp/smart-generate-empty-space.png"))


@pytest.mark.slow  # a whole generation through the local host; CI runs it (pytest -m slow)
def test_continue_at_bar_1_of_a_song_with_an_empty_intro_continues_the_song(window, qtbot, local_host):
    panel = connect(qtbot, window, local_host.local.url, local_host.local.token)
    bar = 4 * PPQ
    clip = Clip([Note(2 * bar + i * PPQ, 60 + i % 5, 400, 80) for i in range(8)], ppq=PPQ)  # bars 3–4
    window.load_project(Project(clip=clip), None)
    window.transport.seek(0)
    assert not window.document.selection and panel.continue_tick() == clip.end_tick
    generate(qtbot, panel, panel.btn_continue, candidates=2, bars=1, seed=5)
    assert "continuing the song from its end" in panel.request_note and panel.request_note in panel.job_label.text()
    for item in panel.model.items:
        assert all(n.start >= clip.end_tick for n in item.notes)


def test_an_empty_or_drums_only_prompt_is_said_plainly(window, qtbot, tmp_path):
    import symusic

    panel = window.generate_panel
    assert "nothing" in panel.prompt_note(0)  # an empty sketch
    score = symusic.Score(PPQ)
    drums = symusic.Track("Drums", 0, True)
    drums.notes.append(symusic.Note(0, PPQ, 36, 100))
    score.tracks.append(drums)
    path = tmp_path / "drums.mid"
    score.dump_midi(str(path))
    assert window.open_path(path, ask=False) and not window.document.notes
    assert "only drums" in panel.prompt_note(0)
    window.load_project(Project(clip=sketch_clip(1)), None)
    assert panel.prompt_note(PPQ) is None  # a note before the point: something to continue


@pytest.mark.slow  # a whole generation through the local host; CI runs it (pytest -m slow)
def test_regenerate_bars_of_a_one_four_file_lands_in_the_selected_bars(window, qtbot, local_host, tmp_path):
    """A POP909-style file stating 1/4: the studio opens it in the model's 4-beat bars (opening is not an
    edit: Undo does not re-bar it), and regenerated bars land where they were selected — also when the
    musician sets 1/4 again on the toolbar (the host re-bars the prompt alike, and the panel says what the
    model read)."""
    from engine.music import TempoChange, TimeSignature

    beat, bar = PPQ, 4 * PPQ
    notes = [Note(b * bar, 48 + (b % 4) * 2, bar - 20, 70) for b in range(8)]
    notes += [Note(b * bar + k * beat, 72 + (b * 3 + k * 2) % 7, beat - 40, 88) for b in range(8) for k in range(4)]
    path = tmp_path / "pop-1-4.mid"
    Clip(notes, PPQ, [TempoChange(0, 96.0)], [TimeSignature(0, 1, 4)]).save_midi(path)
    panel = connect(qtbot, window, local_host.local.url, local_host.local.token)
    assert window.open_path(path, ask=False)
    doc = window.document
    assert doc.clip.time_signatures == [TimeSignature(0, 4, 4)] and doc.clip.num_bars == 8

    # Bar 3 on the ruler is the model's bar 3: the candidates are written for it and stay in it.
    doc.set_selection([n for n in doc.notes if 2 * bar <= n.start < 3 * bar])
    assert panel.infill_span() == (2, 3)
    generate(qtbot, panel, panel.btn_regen, candidates=4, seed=5)
    assert panel.ghosts.region == (2 * bar, 3 * bar) and panel.current_request.meter_note is None
    items = [i for i in panel.model.items if i.notes]
    assert items, "no infill candidate wrote notes"
    for item in items:
        assert all(2 * bar <= n.start < 3 * bar and n.end <= 3 * bar for n in item.notes), item.notes
    before = list(doc.notes)
    assert panel.accept(items[0])
    assert [n for n in doc.notes if not 2 * bar <= n.start < 3 * bar] == [n for n in before
                                                                            if not 2 * bar <= n.start < 3 * bar]
    assert sorted(n for n in doc.notes if 2 * bar <= n.start < 3 * bar) == sorted(items[0].notes)
    window.undo_stack.undo()  # the accept
    assert doc.clip.time_signatures == [TimeSignature(0, 4, 4)] and doc.notes == before
    assert not window.undo_stack.canUndo()  # opening (and its re-barring) is not an edit
    doc.set_time_signature(1, 4)  # the musician asks for the file's one-beat bars: the ruler shows them
    assert doc.clip.time_signatures == [TimeSignature(0, 1, 4)] and doc.notes == before

    # Selecting ruler bars 10–11 (beats 10–11) regenerates the model's bar 3 (ruler bars 9–12), says so,
    # and shows what the host read.
    doc.set_selection([n for n in doc.notes if 9 * beat <= n.start < 11 * beat])
    assert panel.infill_span() == (2, 3)
    panel.spin_candidates.setValue(4)
    panel.spin_seed.setValue(6)
    qtbot.mouseClick(panel.btn_regen, Qt.LeftButton)
    assert "Regenerating bars 9–12" in panel.job_label.text()
    qtbot.waitUntil(lambda: not panel.generating, timeout=60000)
    request = panel.current_request
    assert request.status == "completed", panel.job_label.text()
    assert request.meter_note == "1/4 read as 4/4 (bars of 4 beats)"
    assert window.project_extras.history[-1]["meter_note"] == request.meter_note
    assert "Model's bars: 1/4 read as 4/4 (bars of 4 beats)." in panel.job_label.text()
    assert "1/4 read as 4/4" in panel.history_tree.topLevelItem(0).toolTip(2)  # kept with the request
    assert panel.ghosts.region == (2 * bar, 3 * bar)
    items = [i for i in panel.model.items if i.notes]
    assert items, "no infill candidate wrote notes"
    for item in items:
        assert all(2 * bar <= n.start < 3 * bar and n.end <= 3 * bar for n in item.notes), item.notes
    shot = Path(os.environ.get("SMART_SCREENSHOT_DIR", tmp_path)) / "studio-regenerate-one-four.png"
    assert window.grab().save(str(shot))
