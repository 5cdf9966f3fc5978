"""The studio's live features: Sync (follow / send a MIDI clock over JACK's dummy driver), jam answers as
takes through a host over HTTP (a fake host on httpx's mock transport, a simulated clock), and dragging a
candidate out as a .mid that keeps its place on the bar grid. Headless; no timing asserts."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, QSettings, Qt
from PySide6.QtGui import QMouseEvent
from test_live import SimulatedIO, clock_frames, needs_jack
from test_studio_support import boxes, make_window, window  # noqa: F401 - fixtures

from engine.host_client import HostClient
from jack_support import JackTestDaw, jack_server
from engine.live.clock import CLOCK, CONTINUE, SONG_POSITION, START, STOP, song_position_message
from engine.music import Clip, Note, TempoChange, TimeSignature
from studio.editor.document import SketchDocument
from studio.live.sync import FOLLOW, INTERNAL, MODE_KEY, PORT_KEY, SEND, LiveSync
from studio.transport.controller import Transport

PPQ = 480


# ---------------------------------------------------------------------------- Sync over JACK
@pytest.fixture()
def live_rig(qapp, tmp_path):
    """A JACK server, a DAW (daw:out sends, daw-monitor:in records), a sketch, its transport and a LiveSync."""
    with jack_server(portaudio=False, synchronous=True) as server:
        daw = JackTestDaw()
        doc = SketchDocument(Clip([Note(0, 60, 240, 80)], PPQ))
        transport = Transport(doc)  # no audio: the silent clock moves the playhead
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.IniFormat)
        sync = LiveSync(transport, doc, settings)
        sync.api = "jack"
        yield server, daw, transport, sync, settings
        sync.shutdown()
        transport.shutdown()
        daw.close()


def wait_connected(sync) -> None:
    deadline = time.monotonic() + 10
    while not (sync.io.inport.connections or sync.io.outport.connections) and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.jack
@needs_jack
def test_follow_moves_the_transport_with_the_daw_and_is_remembered(live_rig, qtbot):
    _server, daw, transport, sync, settings = live_rig
    assert "daw:out" in sync.ports()["inputs"] and "daw-monitor:in" in sync.ports()["outputs"]
    assert sync.set_mode(FOLLOW, "daw:out")
    wait_connected(sync)
    assert settings.value(MODE_KEY) == FOLLOW and settings.value(PORT_KEY) == "daw:out"
    rate = daw.rate
    start = daw.client.frame_time + rate // 4
    frames = clock_frames(start, rate, [(100, 24 * 12)])  # 12 beats at 100 bpm
    daw.play([(start - 5, bytes((START,)))] + [(f, bytes((CLOCK,))) for f in frames])
    qtbot.waitUntil(lambda: transport.playing, timeout=10000)
    qtbot.waitUntil(lambda: sync.locked() and transport.position > PPQ, timeout=10000)
    assert sync.measured_bpm() == pytest.approx(100.0, abs=0.1)
    # Stop, then the DAW's cursor moves to bar 3 (beat 8): the playhead follows while stopped.
    now = daw.client.frame_time
    daw.play([(now + rate // 20, bytes((STOP,))), (now + rate // 10, song_position_message(8.0))])
    qtbot.waitUntil(lambda: not transport.playing and transport.position == 8 * PPQ, timeout=10000)
    assert not sync.running
    # Continue: the transport plays on from there.
    now = daw.client.frame_time
    daw.play([(now + rate // 20, bytes((CONTINUE,)))] + [(f, bytes((CLOCK,)))
                                                         for f in clock_frames(now + rate // 10, rate, [(100, 48)])])
    qtbot.waitUntil(lambda: transport.playing, timeout=10000)
    assert transport.position >= 8 * PPQ
    # A fresh studio restores the choice.
    sync.shutdown()
    again = LiveSync(transport, transport.doc, settings)
    again.api = "jack"
    assert again.saved_choice() == (FOLLOW, "daw:out") and again.restore() and again.mode == FOLLOW
    again.shutdown()


@pytest.mark.jack
@needs_jack
def test_send_leads_the_daw_from_the_transport(live_rig, qtbot):
    _server, daw, transport, sync, _settings = live_rig
    transport.doc.set_tempo(150.0)
    assert sync.set_mode(SEND, "daw-monitor:in")
    wait_connected(sync)
    transport.seek(4 * PPQ)  # stopped: the DAW's cursor goes to beat 4 (SPP)
    qtbot.waitUntil(lambda: any(m[0] == SONG_POSITION for _, m in daw.received), timeout=10000)
    assert [m for _, m in daw.received if m[0] == SONG_POSITION] == [song_position_message(4.0)]
    daw.received.clear()
    transport.play()
    qtbot.waitUntil(lambda: sum(m == bytes((CLOCK,)) for _, m in daw.received) >= 48, timeout=10000)
    assert sync.locked() and sync.measured_bpm() == 150.0
    transport.stop()
    qtbot.waitUntil(lambda: any(m == bytes((STOP,)) for _, m in daw.received), timeout=10000)
    kinds = [m[0] for _, m in daw.received]
    assert kinds[:3] == [SONG_POSITION, CONTINUE, CLOCK]  # from beat 4: SPP + Continue, then the ticks
    assert daw.received[0][1] == song_position_message(4.0)
    tick_frames = [f for f, m in daw.received if m == bytes((CLOCK,))]
    spt = daw.rate * 60 / (150 * 24)
    assert max(abs(f - (tick_frames[0] + k * spt)) for k, f in enumerate(tick_frames)) <= 1
    # A seek while playing relocates the DAW: Stop, SPP, Continue.
    daw.received.clear()
    transport.play()
    qtbot.waitUntil(lambda: sum(m == bytes((CLOCK,)) for _, m in daw.received) >= 5, timeout=10000)
    transport.seek(16 * PPQ)
    qtbot.waitUntil(lambda: song_position_message(16.0) in [m for _, m in daw.received], timeout=10000)
    after = [m for _, m in daw.received]
    i = after.index(song_position_message(16.0))
    assert bytes((STOP,)) in after[i - 2:i] and after[i + 1] == bytes((CONTINUE,))  # (all notes off between)
    transport.stop()
    assert sync.set_mode(INTERNAL) and sync.io is None


def test_sync_falls_back_to_internal_when_ports_cannot_open(qapp, tmp_path, monkeypatch):
    from engine.live import scheduler

    def refuse(api, **kw):
        raise scheduler.LiveUnavailable("no MIDI here")

    monkeypatch.setattr(scheduler, "open_live_io", refuse)
    doc = SketchDocument()
    transport = Transport(doc)
    sync = LiveSync(transport, doc, QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    said = []
    sync.message.connect(said.append)
    assert not sync.set_mode(FOLLOW, "somewhere")
    assert sync.mode == INTERNAL and sync.io is None and "no MIDI here" in said[-1]
    transport.shutdown()


# ---------------------------------------------------------------------------- jam through the host
class FakeHost:
    """Answers /v1/generate like `smart serve`: one candidate, the prompt's last pitch an octave up on every
    beat of the asked bars, from at_tick; records the requests."""

    def __init__(self):
        self.requests: list[dict] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        prompt, _ = Clip.from_midi(base64.b64decode(body["prompt_midi"]), mode="user")
        pitch = (prompt.notes[-1].pitch if prompt.notes else 60) + 12
        at = body["at_tick"]
        answer = Clip([Note(at + k * prompt.ppq, pitch, prompt.ppq // 2, 90) for k in range(body["bars"] * 4)],
                      prompt.ppq, prompt.tempos, prompt.time_signatures)
        cand = {"candidate": 0, "midi": base64.b64encode(answer.to_midi_bytes()).decode()}
        lines = [{"event": "started", "request_id": 1}, {"event": "candidate", **cand},
                 {"event": "done", "done": True, "candidates": [cand]}]
        return httpx.Response(200, content="".join(json.dumps(x) + "\n" for x in lines).encode())


class FakeConnection:
    """A connected studio.generate.hostconn.HostConnection, to the fake host."""

    def __init__(self, client):
        from PySide6.QtCore import QObject, Signal

        class _Signals(QObject):
            changed = Signal()

        self._signals = _Signals()
        self.changed = self._signals.changed
        self.client, self.connected, self.busy, self.state, self.error = client, True, False, "connected", None


class FakeSync:
    """What the jam needs of LiveSync: a LiveIO (here a simulated clock) and the transport's position."""

    def __init__(self, io):
        self.io, self.mode, self.error, self.released = io, SEND, None, False

        class _T:
            position = 0.0
        self.transport = _T()

    def ensure_io(self):
        return self.io

    def release_io(self):
        self.released = True


def test_jam_answers_through_the_host_land_as_one_undo_step_each(qapp, qtbot):
    from studio.live.jam import JamController

    host = FakeHost()
    client = HostClient("http://fake-host", transport=httpx.MockTransport(host.handler))
    io = SimulatedIO(bpm=120)
    doc = SketchDocument(Clip([], PPQ, [TempoChange(0, 120.0)], [TimeSignature(0, 4, 4)]))
    jam = JamController(FakeSync(io), FakeConnection(client), doc)
    jam.set_options(listen_bars=1, answer_bars=1, temperature=0.7, top_p=0.9)
    landed = []
    jam.answer_landed.connect(landed.append)
    assert jam.start() and jam.running
    io.start_internal(0.0)  # the transport's Play: our clock starts
    musician = [(0.5, bytes((0x90, 67, 80))), (0.75, bytes((0x80, 67, 0))), (1.0, bytes((0x90, 69, 80))),
                (1.25, bytes((0x80, 69, 0)))]
    t = 0.0
    while len(landed) < 2 and t < 12.0:  # the clock is stepped here; the jam thread polls it
        t += 0.01
        io.advance(t, incoming=[e for e in musician if io.t <= e[0] < t])
        qapp.processEvents()
        time.sleep(0.001)
    jam.stop()
    assert [a.start_beat for a in landed] == [4.0, 12.0]  # bar 2, bar 4: listen 1, answer 1
    first = host.requests[1]  # requests[0] is the warm-up
    assert (first["candidates"], first["bars"], first["at_tick"], first["score"]) == (1, 1, 4 * 480, False)
    assert first["temperature"] == 0.7 and first["top_p"] == 0.9
    prompt, _ = Clip.from_midi(base64.b64decode(first["prompt_midi"]), mode="user")
    assert [(n.start * PPQ // prompt.ppq, n.pitch) for n in prompt.notes] == [(480, 67), (960, 69)]
    # In the sketch: answer 1 on the beats of bar 2 — one undo step per answer.
    first_take = sorted((n.start, n.pitch) for n in doc.notes if n.start < 8 * PPQ)
    assert first_take == [(4 * PPQ + k * PPQ, 81) for k in range(4)]
    assert doc.undo_stack.count() == 2 and doc.undo_stack.text(0).startswith("Jam answer 1 (bar 2)")
    doc.undo_stack.undo()
    assert all(n.start < 8 * PPQ for n in doc.notes) and len(doc.notes) == 4
    # ... and on MIDI out, on the beat grid: beat 4 at 120 bpm = 2.0 s.
    ons = [(round(t_, 6), m[1]) for t_, m in io.out if m[0] == 0x90]
    assert ons[:4] == [(2.0, 81), (2.5, 81), (3.0, 81), (3.5, 81)]


def test_jam_answers_keep_the_key_and_the_taste_picks_the_best_of_n(qapp):
    """Key lock: the Generate panel's allowed pitches go with each request. Best of N: N answers are asked
    for only when a taste is fitted, and the one it scores highest is played."""
    from studio.generate.options import GenerateOptions
    from studio.live.hostgen import host_generator
    from studio.live.jam import JamController

    requests = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append(body)
        cands = []
        for k in range(body["candidates"]):  # candidate k plays pitch 60 + 5k on every beat
            answer = Clip([Note(body["at_tick"] + b * PPQ, 60 + 5 * k, PPQ // 2, 90) for b in range(4)], PPQ)
            cands.append({"candidate": k, "midi": base64.b64encode(answer.to_midi_bytes()).decode()})
        lines = [{"event": "done", "done": True, "candidates": cands}]
        return httpx.Response(200, content="".join(json.dumps(x) + "\n" for x in lines).encode())

    class Taste:
        ready = True

        def score(self, continuation, prompt):  # this musician likes it high
            return (float(np.mean([n.pitch for n in continuation.notes])), 0.0)

    client = HostClient("http://fake-host", transport=httpx.MockTransport(handler))
    options = GenerateOptions(key_lock=True, key_root=2, key_scale="major")
    jam = JamController(FakeSync(SimulatedIO()), FakeConnection(client), SketchDocument(),
                        generate_options=lambda: options, taste=Taste())
    jam.set_answer_choices(key_lock=True, best_of=3)
    prompt = Clip([Note(0, 62, PPQ, 80)], PPQ)
    notes = host_generator(lambda: client, jam.answer_sampling, choose=jam._choose_by_taste)(prompt, 4 * PPQ, 1)
    assert requests[-1]["candidates"] == 3 and requests[-1]["allowed_pitches"] == options.allowed()
    assert {n.pitch for n in notes} == {70}  # the highest of 60, 65, 70: the taste's pick
    jam.taste = None  # no taste: one answer, nothing to pick by
    host_generator(lambda: client, jam.answer_sampling, choose=jam._choose_by_taste)(prompt, 4 * PPQ, 1)
    assert requests[-1]["candidates"] == 1
    jam.set_answer_choices(key_lock=False)
    assert jam.answer_sampling().allowed_pitches is None


def test_jam_waits_for_the_host_then_starts(qapp):
    from studio.live.jam import JamController

    conn = FakeConnection(None)
    conn.connected, conn.state = False, "disconnected"
    started = []
    conn.connect_host = lambda: started.append(True)
    jam = JamController(FakeSync(SimulatedIO()), conn, SketchDocument())
    assert not jam.start() and jam.waiting_for_host and started == [True]
    conn.state, conn.error = "failed", "no model"
    conn.changed.emit()
    assert not jam.waiting_for_host and not jam.running


@pytest.mark.jack
@needs_jack
def test_studio_jam_follows_the_daw_and_answers_in_its_bars(live_rig, qtbot):
    """Follow over JACK + jam through a host over HTTP: the musician's bar 1 is the prompt, the answer is
    played on our output on bar 2's beats (to a frame) and lands in the sketch; the transport followed."""
    from studio.live.jam import JamController

    _server, daw, transport, sync, _settings = live_rig
    assert sync.set_mode(FOLLOW, "daw:out")
    sync.io.client.connect(sync.io.outport, "daw-monitor:in")
    wait_connected(sync)
    host = FakeHost()
    jam = JamController(sync, FakeConnection(HostClient("http://fake-host", transport=httpx.MockTransport(host.handler))),
                        transport.doc)
    jam.set_options(listen_bars=1, answer_bars=1)
    landed = []
    jam.answer_landed.connect(landed.append)
    assert jam.start()
    rate = daw.rate
    start = daw.client.frame_time + rate // 2
    frames = clock_frames(start, rate, [(240, 24 * 4 * 5)])  # a bar a second, 5 bars
    musician = [(frames[24], bytes((0x90, 64, 90))), (frames[48], bytes((0x80, 64, 0))),
                (frames[48], bytes((0x90, 67, 90))), (frames[72], bytes((0x80, 67, 0)))]
    daw.play(sorted([(start - 5, bytes((START,)))] + [(f, bytes((CLOCK,))) for f in frames] + musician,
                    key=lambda e: e[0]))
    qtbot.waitUntil(lambda: transport.playing, timeout=10000)
    qtbot.waitUntil(lambda: bool(landed), timeout=30000)
    assert landed[0].start_beat == 4.0 and landed[0].ready_ms_before > 0
    prompt, _ = Clip.from_midi(base64.b64decode(host.requests[-1]["prompt_midi"]), mode="user")
    assert [(n.start * PPQ // prompt.ppq, n.pitch) for n in prompt.notes] == [(480, 64), (960, 67)]
    assert sorted((n.start, n.pitch) for n in transport.doc.notes if n.start >= 4 * PPQ)[:4] == [
        (4 * PPQ + k * PPQ, 79) for k in range(4)]
    qtbot.waitUntil(lambda: daw.client.frame_time > frames[24 * 8] + rate // 10, timeout=20000)
    jam.stop()
    ons = [f for f, m in daw.received if m[0] & 0xF0 == 0x90 and m[2] > 0]
    assert [abs(f - frames[24 * beat]) <= 1 for f, beat in zip(ons, (4, 5, 6, 7))] == [True] * 4


def test_changing_the_sync_stops_a_jam_before_its_ports_close(qapp, tmp_path, monkeypatch):
    from engine.live import scheduler
    from studio.live.jam import JamController

    class ClosableIO(SimulatedIO):
        closed = False

        def close(self):
            self.closed = True

    opened = []
    monkeypatch.setattr(scheduler, "open_live_io", lambda api, **kw: opened.append(ClosableIO()) or opened[-1])
    doc = SketchDocument()
    transport = Transport(doc)
    sync = LiveSync(transport, doc, QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    assert sync.set_mode(SEND, "a synth")
    jam = JamController(sync, FakeConnection(HostClient("http://fake-host",
                                                        transport=httpx.MockTransport(FakeHost().handler))), doc)
    said = []
    jam.message.connect(said.append)
    assert jam.start() and jam.running
    assert sync.set_mode(INTERNAL)
    assert not jam.running and opened[0].closed and "Sync ports changed" in said[-1]
    assert jam._thread is not None and not jam._thread.is_alive()
    transport.shutdown()


def test_while_sync_is_on_playback_midi_leaves_through_the_live_ports(qapp, tmp_path, monkeypatch):
    """Sync on: the player's MIDI goes to the live ports' scheduler (one copy to the DAW, frame-exact over
    JACK); back on the internal clock it returns to the MIDI menu's output."""
    from engine.live import scheduler

    class ClosableIO(SimulatedIO):
        def close(self):
            pass

    monkeypatch.setattr(scheduler, "open_live_io", lambda api, **kw: ClosableIO())
    doc = SketchDocument()
    transport = Transport(doc)
    menu_out = object()
    transport.set_midi_out(menu_out)
    sync = LiveSync(transport, doc, QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    assert sync.set_mode(FOLLOW, "a DAW")
    assert isinstance(transport.midi_route, scheduler.LiveMidiOut) and transport.midi_route.io is sync.io
    assert sync.set_mode(INTERNAL)
    assert transport.midi_route is menu_out
    jam_io = sync.ensure_io()  # a jam's ports on the internal clock: the sketch's playback stays on the menu's
    assert jam_io is not None and transport.midi_route is menu_out
    sync.release_io()
    transport.shutdown()


# ---------------------------------------------------------------------------- candidate drag handle
def read_back(path: str) -> tuple[list[tuple[float, int]], float, tuple[int, int]]:
    """The file as another program sees it (mido): (beat, pitch) of each note-on, tempo, metre."""
    import mido

    mid = mido.MidiFile(path)
    notes, now, bpm, metre = [], 0, None, None
    for msg in mido.merge_tracks(mid.tracks):
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            notes.append((now / mid.ticks_per_beat, msg.note))
        elif msg.type == "set_tempo":
            bpm = mido.tempo2bpm(msg.tempo)
        elif msg.type == "time_signature":
            metre = (msg.numerator, msg.denominator)
    return notes, bpm, metre


def test_candidate_grip_drags_a_file_on_the_bar_grid(window, qtbot, monkeypatch):
    from studio.generate.dragout import GRIP_WIDTH, candidate_drag_mime
    from studio.generate.history import READY, Candidate

    clip = Clip([Note(0, 60, 480, 80)], PPQ, [TempoChange(0, 96.0)], [TimeSignature(0, 3, 4)])
    window.document.load(clip)
    # A continuation written from bar 5 beat 2¼ (bar 5 starts at beat 12 in 3/4): absolute beats 13.25, 14.5, 16.
    cand = Candidate(index=2, request="r1", mode="continue", status=READY, span=(12 * PPQ + 600, 18 * PPQ),
                     placement="insert", notes=[Note(12 * PPQ + 600, 64, 240, 90), Note(14 * PPQ + 240, 67, 480, 80),
                                                Note(16 * PPQ, 60, 960, 70)])
    panel = window.generate_panel
    panel.model.add(cand)
    mime = candidate_drag_mime(cand, window.document.clip)
    path = mime.urls()[0].toLocalFile()
    assert path.endswith("candidate 3 from bar 5.mid") and mime.text() == path
    notes, bpm, metre = read_back(path)
    assert bpm == pytest.approx(96.0) and metre == (3, 4)
    bar5 = 12.0  # the file starts on bar 5's line: its beats + 12 are the sketch's beats
    assert [(b + bar5, p) for b, p in notes] == [(13.25, 64), (14.5, 67), (16.0, 60)]
    # The grip on the row starts that drag; elsewhere on the row a press only selects.
    dragged = []
    monkeypatch.setattr(window.live.candidate_drag, "start_drag", dragged.append)
    table = panel.table
    table.resizeColumnsToContents()
    rect = table.visualRect(panel.proxy.index(0, 0))
    grip = QPointF(rect.right() - GRIP_WIDTH / 2, rect.center().y())
    vp = table.viewport()

    def mouse(kind, pos, buttons):
        event = QMouseEvent(kind, pos, vp.mapToGlobal(pos), Qt.LeftButton, buttons, Qt.NoModifier)
        return window.live.candidate_drag.eventFilter(vp, event)

    mouse(QEvent.MouseButtonPress, QPointF(rect.left() + 6, rect.center().y()), Qt.LeftButton)
    mouse(QEvent.MouseMove, QPointF(rect.left() + 40, rect.center().y() + 20), Qt.LeftButton)
    assert dragged == []
    mouse(QEvent.MouseButtonRelease, QPointF(rect.left() + 40, rect.center().y()), Qt.NoButton)
    mouse(QEvent.MouseButtonPress, grip, Qt.LeftButton)
    mouse(QEvent.MouseMove, grip + QPointF(30, 0), Qt.LeftButton)
    assert dragged == [cand]


def test_sync_and_jam_controls_are_in_the_window(window):
    live = window.live
    assert live.sync.mode == INTERNAL and live.sync.io is None
    assert live.sync_control.button.text() == "Sync: Internal"
    assert live.jam_bar.button.text() == "● Jam" and live.jam_bar.listen.value() == 2
    live.jam_bar.answer.setValue(4)
    assert live.jam.answer_bars == 4 and window.settings.value("live/jamAnswerBars") in (4, "4")
