"""The studio reads a file in the model's meter: a 1/4 pop song shows (and is regenerated in) 4-beat bars.

POP909 states 1/4 in about two thirds of its songs; the model reads them as 4/4 (engine.meter). The
import re-bars the sketch as one undo step and says so; requests to the host count the model's bars
whatever the sketch's meter. (The requests themselves, against a host: studio_generate_cases.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_studio_support import boxes, make_window, window  # noqa: F401 - fixtures

from engine.meter import MODEL_TIME_SIGNATURES, model_meter
from engine.music import Clip, Note, TempoChange, TimeSignature
from engine.project import Project
from studio.editor.timegrid import BAR, grid_lines

PPQ = 480
BEAT = PPQ


def pop_song(bars: int = 8, meter: tuple[int, int] = (1, 4)) -> Clip:
    """Four-beat pop music (a chord on beat 1, a melody on every beat) stating the meter `meter`."""
    notes = []
    roots = [48, 45, 41, 43]  # C, Am, F, G
    for bar in range(bars):
        root = roots[bar % 4]
        t = bar * 4 * BEAT
        notes += [Note(t, root, 4 * BEAT - 20, 70), Note(t, root + 7, 4 * BEAT - 20, 64)]
        notes += [Note(t + k * BEAT, 72 + (bar * 3 + k * 2) % 7, BEAT - 40, 90 - 8 * k) for k in range(4)]
    return Clip(notes, PPQ, [TempoChange(0, 96.0)], [TimeSignature(0, *meter)])


def bar_lines(clip: Clip, until: int) -> list[int]:
    return [int(t) for t, kind, _ in grid_lines(clip, 0, until, None) if kind == BAR]


def test_the_studio_meter_is_the_tokenizer_vocabulary():
    from engine.tokenizer import default_tokenizer

    tok = default_tokenizer()
    assert sorted(MODEL_TIME_SIGNATURES) == sorted(tok.time_signatures)
    for meter in [(1, 4), (2, 8), (12, 16), (7, 8), (3, 4)]:
        clip = pop_song(2, meter)
        assert model_meter(clip) == tok.model_meter(clip)


def test_a_one_four_file_opens_in_four_beat_bars_as_one_undo_step(window, tmp_path):
    song = pop_song(8)
    path = tmp_path / "pop909-like.mid"
    song.save_midi(path)
    on_disk = path.read_bytes()
    assert window.open_path(path, ask=False)
    clip = window.clip
    # The model's bars: 4/4 from the start, every note where it was.
    assert clip.time_signatures == [TimeSignature(0, 4, 4)] and clip.notes == song.notes
    assert clip.num_bars == 8 and bar_lines(clip, 8 * 4 * BEAT) == [b * 4 * BEAT for b in range(9)]
    assert window.transport_bar.numerator.value() == 4
    message = window.statusBar().currentMessage()
    assert "1/4 read as 4/4 (bars of 4 beats)" in message and "the file itself is unchanged" in message
    assert "imported as is" not in message
    assert not window.is_modified() and path.read_bytes() == on_disk
    # Opening is not an edit: the first Ctrl+Z must not re-bar the song (issue 24).
    assert window.undo_stack.count() == 0 and not window.undo_stack.canUndo()

    # The piano roll as the musician sees it (looked at by the developer: 4-beat bars, numbered 1–8).
    window.editor.grid.center_on_notes()
    shot = Path(os.environ.get("SMART_SCREENSHOT_DIR", tmp_path)) / "studio-one-four-import.png"
    assert window.grab().save(str(shot))


def test_a_file_in_the_model_meter_opens_as_it_is(window, tmp_path):
    path = tmp_path / "waltz.mid"
    pop_song(4, (3, 4)).save_midi(path)
    assert window.open_path(path, ask=False)
    assert window.clip.time_signatures == [TimeSignature(0, 3, 4)] and window.undo_stack.count() == 0
    assert "read as" not in window.statusBar().currentMessage()


def test_requests_count_the_model_bars_whatever_the_sketch_meter(window, tmp_path):
    """A sketch in 1/4 (the musician set it back) shows one-beat bars; Regenerate and Continue still ask for
    the model's 4-beat bars (the host re-bars the prompt the same way) and say which ruler bars they cover."""
    window.load_project(Project(clip=pop_song(8)), None)  # as the file states it: opening would re-bar it
    panel, doc = window.generate_panel, window.document
    assert doc.clip.time_signature.numerator == 1
    # Notes in ruler bars 6–7 (beats 6–7) lie in the model's bar 2 (beats 5–8).
    doc.set_selection([n for n in doc.notes if 5 * BEAT <= n.start < 7 * BEAT])
    assert panel.infill_span() == (1, 2)
    assert panel.ruler_bars((4 * BEAT, 8 * BEAT)) == "bars 5–8"
    model = panel.model_clip()
    assert model.time_signatures == [TimeSignature(0, 4, 4)] and model.notes == doc.notes
    # A continuation from inside a model bar fills it, then whole 4-beat bars.
    doc.clear_selection()
    window.transport.seek(5 * BEAT)
    panel.spin_bars.setValue(2)
    from studio.generate.placement import continuation_span

    assert continuation_span(model, panel.continue_tick(), 2) == (5 * BEAT, 16 * BEAT)
    # With the model's bars in the sketch, the numbers are the ruler's own.
    window.load_project(Project(clip=model_meter(pop_song(8))[0]), None)
    doc.set_selection([n for n in doc.notes if 5 * BEAT <= n.start < 7 * BEAT])
    assert panel.infill_span() == (1, 2) and panel.ruler_bars((4 * BEAT, 8 * BEAT)) == "bar 2"


def test_a_request_re_bars_the_sketch_once(window, qtbot, monkeypatch):
    """Continue and Regenerate re-bar the sketch into the model's bars once per request and count the point,
    span and bars on that one reading (a request re-barred it up to five times); the host re-bars the
    prompt it receives once more, where it enters (tests/test_continuation.py)."""
    import json

    import httpx

    import studio.generate.panel as panel_module
    from engine.api import HealthReply
    from engine.host_client import HostClient

    sent: list[dict] = []

    def host(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        lines = [{"event": "started", "request_id": len(sent)}, {"event": "done", "done": True, "candidates": []}]
        return httpx.Response(200, content="".join(json.dumps(line) + "\n" for line in lines).encode())

    re_barred: list[Clip] = []
    monkeypatch.setattr(panel_module, "model_meter", lambda clip: re_barred.append(clip) or model_meter(clip))
    window.load_project(Project(clip=pop_song(8)), None)  # 1/4 as the file states it: the model reads 4 beats
    panel, doc = window.generate_panel, window.document
    panel.host.client = HostClient("http://fake-host", transport=httpx.MockTransport(host))
    panel.host.state = "connected"
    panel.host.health = HealthReply(device="cpu", maa={"status": "missing", "reason": "none here"})
    try:
        doc.set_selection([n for n in doc.notes if 5 * BEAT <= n.start < 7 * BEAT])  # in the model's bar 2
        for act, asked in ((panel.continue_, {"at_tick": 8 * BEAT}),
                           (panel.regenerate_selection, {"infill": {"start_bar": 1, "end_bar": 2}})):
            re_barred.clear()
            act()
            qtbot.waitUntil(lambda: not panel.generating, timeout=10000)
            assert len(re_barred) == 1 and re_barred[0] is doc.clip
            assert asked.items() <= sent[-1].items()
    finally:
        panel.host.client, panel.host.health, panel.host.state = None, None, "disconnected"


def test_the_in_scale_search_reward_has_its_own_name(window, tmp_path):
    from studio.generate.history import Request
    from studio.generate.options import GenerateOptions
    from studio.generate.search import OFFLINE_REWARDS, offline_reward, reward_label
    from studio.generate.session import describe_request

    panel = window.generate_panel
    names = [panel.combo_reward.itemData(i) for i in range(panel.combo_reward.count())]
    assert "in-scale" in names and "scale" not in names
    label = panel.combo_reward.itemText(names.index("in-scale"))
    assert label == OFFLINE_REWARDS["in-scale"] and "empty beats" in label and label != "Scale consistency (offline)"
    beam = pop_song(1, (4, 4))
    assert offline_reward("in-scale", beam, beam) == pytest.approx(1.0)  # C major, every beat sounding
    with pytest.raises(ValueError):
        offline_reward("scale", beam, beam)
    # Old project files and settings that say "scale" are read as "in-scale".
    old = Request.from_dict({"id": "r1", "time": "t", "mode": "search", "settings": {"search_reward": "scale"},
                             "reward": "scale", "beams": 3, "budget_s": 20})
    assert old.reward == "in-scale" and old.settings["search_reward"] == "in-scale"
    assert describe_request(old).startswith(reward_label("in-scale")) and reward_label("scale") == label
    settings = window.settings
    settings.setValue("generate/search_reward", "scale")
    assert GenerateOptions.load(settings).search_reward == "in-scale"


def test_training_prompts_from_a_one_four_sketch_start_on_the_model_bar_lines():
    from studio.train.prompts import prompt_from_notes

    song = pop_song(4)  # stating 1/4: a one-beat bar per beat on the file's own ruler
    sel = [n for n in song.notes if 5 * BEAT <= n.start < 9 * BEAT]  # beats 6–9: model bars 2 and 3
    p = prompt_from_notes(song, sel, "x")
    assert p.source["bars"] == [1, 3] and p.bars == 2
    assert p.clip.time_signatures == [TimeSignature(0, 4, 4)]
    assert sorted(n.start for n in p.clip.notes) == sorted(n.start - 4 * BEAT for n in sel)


def test_the_import_notice_stays_readable(window, qtbot, tmp_path):
    """The 1/4 → 4/4 notice was replaced 0.5 s later by the no-sound message (issue 24): news nobody asked
    for waits its turn, and a notice interrupted early comes back after the interruption."""
    path = tmp_path / "pop.mid"
    pop_song(4).save_midi(path)
    assert window.open_path(path, ask=False)
    imported = window.statusBar().currentMessage()
    assert "1/4 read as 4/4" in imported
    window._set_audio_status("No sound: no output device (test)")
    assert window.statusBar().currentMessage() == imported
    assert window.pending_notices()[-1] == "No sound: no output device (test)"
    window.show_message("Tempo 96 → 100 BPM", 200)  # something the musician just did: shown at once
    assert window.statusBar().currentMessage() == "Tempo 96 → 100 BPM"
    qtbot.waitUntil(lambda: window.statusBar().currentMessage() == imported, timeout=3000)


@pytest.mark.parametrize("meter", [(4, 4), (3, 4)])
def test_continue_with_a_selection_starts_on_the_bar_line_after_it(window, meter):
    """It started at the end of the longest selected note: a pedal-held note skipped a bar, and in 3/4 the
    start fell off the grid (issue 24)."""
    beats = meter[0]
    bar = beats * BEAT
    notes = [Note(b * BEAT, 60 + b % 5, BEAT - 40, 80) for b in range(4 * beats)]
    held = Note(bar + (beats - 1) * BEAT, 48, BEAT + 136, 70)  # the last onset of bar 2, pedalled into bar 3
    window.load_project(Project(clip=Clip(notes + [held], PPQ, [TempoChange(0, 100.0)],
                                          [TimeSignature(0, *meter)])), None)
    doc = window.document
    doc.set_selection([n for n in doc.notes if n.start < 2 * bar])
    assert window.generate_panel.continue_tick() == 2 * bar
