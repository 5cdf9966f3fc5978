"""Live play: MIDI clock follow/lead arithmetic, the beat-grid scheduler, and jam — over JACK's dummy driver.

No timing asserts: over JACK every event carries its frame, so where a note lands is arithmetic on
frames (the dummy driver needs no sound card and runs whatever the machine's load).
"""

from __future__ import annotations

import time

import pytest

from jack_support import JackTestDaw, jack_server, jackd_missing_reason
from engine.live.clock import (
    CLOCK,
    CONTINUE,
    SONG_POSITION,
    START,
    STOP,
    ClockFollower,
    ClockLeader,
    song_position_beats,
    song_position_message,
)
from engine.live.jam import Jam, JamOptions
from engine.live.scheduler import ALL_NOTES_OFF_CC, LiveIO
from engine.music import Note

JACKD_MISSING = jackd_missing_reason()
needs_jack = pytest.mark.skipif(JACKD_MISSING is not None, reason=JACKD_MISSING or "")


def ticks(bpm: float, start: float, count: int) -> list[float]:
    spt = 60.0 / (bpm * 24)
    return [start + k * spt for k in range(count)]


# ---------------------------------------------------------------------------- clock arithmetic
def test_song_position_pointer_arithmetic():
    assert song_position_message(0) == bytes((SONG_POSITION, 0, 0))
    assert song_position_message(4.0) == bytes((SONG_POSITION, 16, 0))  # 16 sixteenths
    assert song_position_message(100.0) == bytes((SONG_POSITION, 400 & 0x7F, 400 >> 7))  # LSB first
    assert song_position_message(10_000.0)[1:] == bytes((0x7F, 0x7F))  # 14 bits at most
    assert song_position_beats(400 & 0x7F, 400 >> 7) == 100.0
    assert song_position_message(2.3) == song_position_message(2.25)  # rounded down to a sixteenth


def test_follower_starts_on_the_first_tick_and_measures_the_tempo():
    started, stopped = [], []
    f = ClockFollower(on_start=started.append, on_stop=lambda: stopped.append(True))
    for t in ticks(120, 0.0, 30):  # a DAW's clock runs while stopped: tempo known before Start
        f.on_message(bytes((CLOCK,)), t)
    assert f.bpm == pytest.approx(120.0) and not f.running and f.beat_at(1.0) is None
    f.on_message(bytes((START,)), 0.7)
    times = ticks(120, 1.0, 49)
    for t in times:
        f.on_message(bytes((CLOCK,)), t)
    assert started == [0.0] and f.running
    assert f.beat_at(1.0) == pytest.approx(0.0) and f.beat_at(times[-1]) == pytest.approx(2.0)
    assert f.time_of_beat(3.0) == pytest.approx(1.0 + 1.5)
    assert f.locked(times[-1] + 0.01) and not f.locked(times[-1] + 1.0)
    f.on_message(bytes((STOP,)), 3.0)
    assert stopped == [True] and f.beat_at(3.0) is None


def test_tempo_change_is_tracked_within_one_beat():
    f = ClockFollower()
    f.on_message(bytes((START,)), 0.0)
    t120 = ticks(120, 0.0, 97)
    for t in t120:
        f.on_message(bytes((CLOCK,)), t)
    t90 = ticks(90, t120[-1], 25)[1:]  # the tempo drops to 90 bpm from here on
    for k, t in enumerate(t90):
        f.on_message(bytes((CLOCK,)), t)
        if k == 11:
            assert 90 < f.bpm < 120  # half a beat in: between the two
    assert f.bpm == pytest.approx(90.0, abs=0.1)
    assert f.position_beats == pytest.approx(5.0)


def test_jittered_clock_is_smoothed():
    import random

    rng = random.Random(0)
    f = ClockFollower(window=48)
    f.on_message(bytes((START,)), 0.0)
    for t in ticks(120, 0.0, 200):
        f.on_message(bytes((CLOCK,)), t + rng.uniform(-0.001, 0.001))  # ±1 ms per tick
    assert f.bpm == pytest.approx(120.0, abs=0.3)


def test_continue_from_song_position():
    f = ClockFollower()
    f.on_message(bytes((START,)), 0.0)
    for t in ticks(120, 0.0, 10):
        f.on_message(bytes((CLOCK,)), t)
    f.on_message(bytes((STOP,)), 0.3)
    f.on_message(song_position_message(8.0), 0.4)  # the DAW moved its cursor to beat 8
    assert f.position_beats == 8.0
    f.on_message(bytes((CONTINUE,)), 0.5)
    for t in ticks(120, 1.0, 25):
        f.on_message(bytes((CLOCK,)), t)
    assert f.beat_at(1.0) == pytest.approx(8.0) and f.position_beats == pytest.approx(9.0)


def test_leader_sends_position_and_start_before_its_first_tick():
    lead = ClockLeader(120, start_time=1.0)
    msgs = lead.messages(0.0, 2.0) + lead.messages(2.0, 3.0)
    kinds = [m[0] for _, m in msgs]
    assert kinds[:3] == [SONG_POSITION, START, CLOCK] and msgs[0][0] == msgs[2][0] == 1.0
    assert kinds.count(CLOCK) == 96  # 2 s at 120 bpm, 24 per beat, none twice across windows
    later = ClockLeader(120, start_time=0.0, start_beat=16.0)
    assert [m for _, m in later.messages(0.0, 0.01)][:2] == [song_position_message(16.0), bytes((CONTINUE,))]
    with pytest.raises(ValueError):
        ClockLeader(0.5, 0.0)


# ---------------------------------------------------------------------------- the scheduler's cycle
def run_cycles(io: LiveIO, t0: float, t1: float, period: float = 0.005, incoming=()):
    out, k = [], 0
    pending = sorted(incoming, key=lambda e: e[0])  # stable: Start before the tick at its time
    while t0 + k * period < t1:
        a, b = t0 + k * period, min(t1, t0 + (k + 1) * period)
        out += io.cycle(a, b, [e for e in pending if a <= e[0] < b])
        k += 1
    return out


def test_notes_are_placed_on_beats_and_stop_silences_them():
    io = LiveIO(clock="follow")
    clock = [(t, bytes((CLOCK,))) for t in ticks(120, 0.0, 200)]
    io.schedule_note(2.0, 60, 100, 1.0)  # beat 2 = 1.0 s at 120 bpm
    io.schedule_note(2.5, 64, 90, 4.0)
    sent = run_cycles(io, 0.0, 1.6, incoming=[(0.0, bytes((START,))), *clock[:80]])
    notes = [(round(t, 6), list(m)) for t, m in sent]
    assert notes[:3] == [(1.0, [0x90, 60, 100]), (1.25, [0x90, 64, 90]), (1.5, [0x80, 60, 0])]
    stop = run_cycles(io, 1.6, 1.7, incoming=[(1.6, bytes((STOP,)))])
    assert [list(m) for _, m in stop] == [[0x80, 64, 0], [0xB0, ALL_NOTES_OFF_CC, 0]]  # 64 was still sounding
    assert run_cycles(io, 1.7, 4.0) == []  # the queue was cleared


def test_playback_messages_leave_at_their_times_and_stop_without_the_jams_notes():
    """The studio's playback through the live ports (`LiveMidiOut` → `schedule_message_at`): each message at
    its clock time (a late one at once), in order; stopping the playback (`silence_timed`) drops what is
    queued and ends what it left sounding, while a jam's notes on the beat grid go on."""
    io = LiveIO(clock="internal", bpm=120)
    io.start_internal(0.0)
    io.schedule_note(2.0, 72, 100, 1.0)  # a jam answer: beat 2 = 1.0 s
    for t, msg in [(0.30, (0x90, 60, 90)), (0.10, (0x90, 64, 80)), (0.60, (0x80, 64, 0)), (1.40, (0x80, 60, 0))]:
        io.schedule_message_at(t, bytes(msg))
    sent = [(round(t, 6), list(m)) for t, m in run_cycles(io, 0.0, 0.8) if m[0] & 0xF0 in (0x80, 0x90)]
    assert sent == [(0.1, [0x90, 64, 80]), (0.3, [0x90, 60, 90]), (0.6, [0x80, 64, 0])]
    io.silence_timed()  # the playback stops: 60 was still sounding, its note-off at 1.4 s is dropped
    later = [(round(t, 6), list(m)) for t, m in run_cycles(io, 0.8, 2.0) if m[0] & 0xF0 in (0x80, 0x90)]
    assert later == [(0.8, [0x80, 60, 0]), (1.0, [0x90, 72, 100]), (1.5, [0x80, 72, 0])]  # the jam's note stays
    io.schedule_message_at(1.9, bytes((0x90, 67, 70)))  # queued after its time: it leaves at once
    assert [(round(t, 6), list(m)) for t, m in run_cycles(io, 2.0, 2.1) if m[0] == 0x90] == [(2.0, [0x90, 67, 70])]


def test_live_midi_out_maps_the_players_stamps_to_the_back_ends_clock(monkeypatch):
    """What `engine.playback.Player` calls on a MidiOut, through the live ports: the monotonic stamp becomes
    the back end's time (its clock read at once), the status gets the channel, all-notes-off stops playback."""
    from engine.live import scheduler
    from engine.live.scheduler import LiveMidiOut

    class Backend(LiveIO):
        def now(self) -> float:
            return 500.0

    io = Backend(clock="internal")
    monkeypatch.setattr(scheduler.time, "monotonic", lambda: 100.0)
    out = LiveMidiOut(io, channel=2)
    out._schedule(100.25, 0x90, 60, 99)
    out._request_all_notes_off()
    assert [(k, v) for k, v in drain(io._requests)] == [("timed", (500.25, bytes((0x92, 60, 99)))),
                                                         ("silence-timed", None)]


def test_internal_clock_leads_and_stops():
    io = LiveIO(clock="internal", bpm=150)
    io.start_internal(0.5)
    sent = run_cycles(io, 0.0, 1.5)
    assert [m[0] for _, m in sent[:3]] == [SONG_POSITION, START, CLOCK]
    assert sum(m[0] == CLOCK for _, m in sent) == 60  # 1 s at 150 bpm
    assert io.beat_at(0.9) == pytest.approx(1.0)
    io.stop_internal()
    assert [m[0] for _, m in run_cycles(io, 1.5, 1.6)] == [STOP, 0xB0]


def drain(q) -> list:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_transport_events_for_a_ui_that_follows():
    """Start/Continue's first tick, Stop and a Song Position Pointer while stopped reach `transport_events`."""
    io = LiveIO(clock="follow")
    clock = [(t, bytes((CLOCK,))) for t in ticks(120, 0.0, 48)]
    run_cycles(io, 0.0, 1.0, incoming=[(0.0, bytes((START,))), *clock[:24]])
    run_cycles(io, 1.0, 1.5, incoming=[(1.1, bytes((STOP,))), (1.2, song_position_message(6.0))])
    run_cycles(io, 1.5, 2.0, incoming=[(1.6, bytes((CONTINUE,))), (1.7, bytes((CLOCK,)))])
    events = [(e.kind, e.beat) for e in drain(io.transport_events)]
    assert events == [("start", 0.0), ("stop", None), ("locate", 6.0), ("start", 6.0)]
    assert io.transport_starts == 2


def test_leading_counts_as_a_transport_start_and_locates_while_stopped():
    io = LiveIO(clock="internal", bpm=120)
    io.locate(4.0)  # stopped: the position goes out as a Song Position Pointer
    assert [m for _, m in run_cycles(io, 0.0, 0.1)] == [song_position_message(4.0)]
    io.start_internal(0.2, start_beat=8.0)
    run_cycles(io, 0.1, 0.5)
    assert io.transport_starts == 1 and io.start_beat == 8.0
    io.locate(2.0)  # running: a leader announces its own position, no SPP mid-run
    assert SONG_POSITION not in [m[0] for _, m in run_cycles(io, 0.5, 0.6)]
    io.stop_internal()
    run_cycles(io, 0.6, 0.7)
    assert [(e.kind, e.beat) for e in drain(io.transport_events)] == [("start", 8.0), ("stop", None)]


# ---------------------------------------------------------------------------- jam logic
class SimulatedIO(LiveIO):
    """A LiveIO whose clock is driven by the test: `advance` runs cycles up to a time."""

    def __init__(self, **kw):
        super().__init__(clock="internal", **kw)
        self.t = 0.0
        self.out: list[tuple[float, bytes]] = []

    def now(self) -> float:
        return self.t

    def advance(self, until: float, incoming=()):
        self.out += run_cycles(self, self.t, until, incoming=incoming)
        self.t = until


def echo_generator(seen):
    """Answers with the prompt's last heard pitch on every beat of the answer (and records the prompt)."""
    def generate(clip, at_tick, bars):
        seen.append((clip, at_tick, bars))
        pitch = clip.notes[-1].pitch if clip.notes else 60
        return [Note(at_tick + k * 480, pitch + 12, 240, 90) for k in range(bars * 4)]
    return generate


def test_jam_answers_on_the_bar_line_with_the_musicians_notes_as_prompt():
    import threading

    io = SimulatedIO(bpm=120)
    io.start_internal(0.0)
    seen, answers = [], []
    jam = Jam(io, echo_generator(seen), JamOptions(listen_bars=1, answer_bars=1, max_answers=2),
              on_answer=answers.append)
    worker = threading.Thread(target=jam.run)
    worker.start()
    musician = [(0.5, bytes((0x90, 67, 80))), (0.75, bytes((0x80, 67, 0))), (1.0, bytes((0x90, 69, 80))),
                (1.25, bytes((0x80, 69, 0)))]
    t = 0.0
    while worker.is_alive() and t < 10.0:  # step the clock; the jam thread polls it
        t += 0.01
        io.advance(t, incoming=[e for e in musician if io.t <= e[0] < t])
        time.sleep(0.001)
    jam.stop()
    worker.join(5)
    assert [a.start_beat for a in answers] == [4.0, 12.0]  # bar 2, then bar 4 (listen 1, answer 1)
    clip, at_tick, bars = seen[0]
    assert at_tick == 4 * 480 and bars == 1
    assert [(n.start, n.pitch) for n in clip.notes] == [(480, 67), (960, 69)]  # beats 1 and 2 of bar 1
    first = answers[0]
    assert [n[0] for n in first.notes] == [4.0, 5.0, 6.0, 7.0] and first.notes[0][1] == 81
    assert first.ready_ms_before > 0
    note_ons = [(round(t_, 6), m[1]) for t_, m in io.out if m[0] == 0x90]
    assert note_ons[:4] == [(2.0, 81), (2.5, 81), (3.0, 81), (3.5, 81)]  # beat 4 at 120 bpm = 2.0 s
    # The second prompt holds the first answer too (the model hears what it played).
    assert [n.pitch for n in seen[1][0].notes if n.pitch == 81]


def test_jam_options_are_checked():
    with pytest.raises(ValueError):
        JamOptions(listen_bars=0)
    with pytest.raises(ValueError):
        JamOptions(meter=(4, 3))
    assert JamOptions(meter=(6, 8)).bar_beats == 3.0 and JamOptions(2, 2).answer_start(1) == 24.0


# ---------------------------------------------------------------------------- over JACK
def clock_frames(start: int, rate: int, tempo_segments: list[tuple[float, int]]) -> list[int]:
    """Tick frames from `start`: (bpm, ticks) segments one after another."""
    frames, t = [], float(start)
    for bpm, count in tempo_segments:
        spt = rate * 60.0 / (bpm * 24)
        for _ in range(count):
            frames.append(round(t))
            t += spt
    return frames


@pytest.fixture()
def jack_pair():
    from engine.live.scheduler import JackLiveIO

    with jack_server(portaudio=False, synchronous=True) as server:
        daw = JackTestDaw()
        io = None

        def connect(**kw):
            nonlocal io
            io = JackLiveIO(client_name="smart-live-test", input_port="daw:out", output_port="daw-monitor:in", **kw)
            deadline = time.monotonic() + 10
            while not (io.inport.connections and io.outport.connections) and time.monotonic() < deadline:
                time.sleep(0.01)
            return io

        yield server, daw, connect
        if io is not None:
            io.close()
        daw.close()


def wait_until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.mark.jack
@needs_jack
def test_follows_a_daw_clock_through_a_tempo_change_and_plays_on_its_ticks(jack_pair):
    _server, daw, connect = jack_pair
    io = connect(clock="follow")
    rate = daw.rate
    start = daw.client.frame_time + rate // 2
    frames = clock_frames(start, rate, [(120, 96), (90, 96)])  # 4 beats at 120, then 4 at 90
    pre_roll = clock_frames(start - rate // 2, rate, [(120, 24)])  # clock runs before Start
    events = [(f, bytes((CLOCK,))) for f in pre_roll if f < start - 10]
    events += [(start - 5, bytes((START,)))] + [(f, bytes((CLOCK,))) for f in frames]
    daw.play(events)
    assert wait_until(lambda: io.follower.running)
    io.schedule_note(6.0, 60, 100, 0.5)  # beat 6: 2 beats after the tempo change
    io.schedule_note(6.5, 62, 100, 0.5)
    assert wait_until(lambda: daw.client.frame_time > frames[-1] + rate // 10)
    notes = [(f, list(m)) for f, m in daw.received if m[0] & 0xF0 in (0x80, 0x90)]
    assert [m for _, m in notes] == [[0x90, 60, 100], [0x80, 60, 0], [0x90, 62, 100], [0x80, 62, 0]]
    assert abs(notes[0][0] - frames[144]) <= 1  # beat 6 = tick 144: on the DAW's own tick, to a frame
    assert abs(notes[2][0] - frames[156]) <= 1
    assert io.follower.bpm == pytest.approx(90.0, abs=0.1)
    # Stop from the DAW: everything sounding is released, the queue cleared.
    io.schedule_note(20.0, 64, 100, 1.0)
    daw.play([(daw.client.frame_time + rate // 20, bytes((STOP,)))])
    assert wait_until(lambda: any(m[0] == 0xB0 for _, m in daw.received))
    assert not io.follower.running


@pytest.mark.jack
@needs_jack
def test_leads_with_position_start_and_exact_ticks(jack_pair):
    _server, daw, connect = jack_pair
    io = connect(clock="internal", bpm=120)
    rate = daw.rate
    io.start_internal(io.now() + 0.3)
    assert wait_until(lambda: sum(m == bytes((CLOCK,)) for _, m in daw.received) >= 49)
    io.stop_internal()
    assert wait_until(lambda: any(m == bytes((STOP,)) for _, m in daw.received))
    got = daw.received
    kinds = [m[0] for _, m in got]
    assert kinds[:3] == [SONG_POSITION, START, CLOCK] and got[0][1] == song_position_message(0)
    tick_frames = [f for f, m in got if m == bytes((CLOCK,))]
    spt = rate * 60 / (120 * 24)  # 1,000 frames at 48 kHz
    assert max(abs(f - (tick_frames[0] + k * spt)) for k, f in enumerate(tick_frames)) <= 1  # on the grid, to a frame
    assert kinds.index(STOP) > kinds.index(CLOCK)


@pytest.mark.jack
@needs_jack
def test_jam_answer_lands_in_its_bars_over_jack(jack_pair):
    import threading

    _server, daw, connect = jack_pair
    io = connect(clock="follow")
    rate = daw.rate
    bpm = 240  # a bar a second keeps the test short
    start = daw.client.frame_time + rate // 2
    frames = clock_frames(start, rate, [(bpm, 24 * 4 * 5)])  # 5 bars
    musician = [(frames[24 * 1], bytes((0x90, 64, 90))), (frames[24 * 2], bytes((0x80, 64, 0))),
                (frames[24 * 2], bytes((0x90, 67, 90))), (frames[24 * 3], bytes((0x80, 67, 0)))]
    seen, answers = [], []
    jam = Jam(io, echo_generator(seen), JamOptions(listen_bars=1, answer_bars=1, max_answers=1),
              on_answer=answers.append)
    worker = threading.Thread(target=jam.run)
    worker.start()
    daw.play([(start - 5, bytes((START,)))] + [(f, bytes((CLOCK,))) for f in frames] + musician)
    worker.join(30)
    assert answers and answers[0].start_beat == 4.0 and answers[0].ready_ms_before > 0
    assert [(n.start, n.pitch) for n in seen[0][0].notes] == [(480, 64), (960, 67)]
    assert wait_until(lambda: daw.client.frame_time > frames[24 * 8] + rate // 10)
    ons = [f for f, m in daw.received if m[0] & 0xF0 == 0x90 and m[2] > 0]
    assert len(ons) == 4
    assert [abs(f - frames[24 * beat]) <= 1 for f, beat in zip(ons, (4, 5, 6, 7))] == [True] * 4  # bar 2, on its beats


@pytest.mark.slow
@pytest.mark.jack
@needs_jack
def test_smart_live_headless_contract(tmp_path):
    """`smart live` with its own clock: ready file, one JSON line per answer, answers inside their bars."""
    import json
    import os
    import subprocess
    import sys

    from engine.policy import Policy

    model = tmp_path / "tiny"
    Policy.create("tiny", seed=1).save(model)
    ready = tmp_path / "ready.json"
    with jack_server(portaudio=False, synchronous=True):
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "live", "--model", str(model), "--midi-api", "jack",
             "--clock", "internal", "--bpm", "240", "--listen-bars", "1", "--answer-bars", "1",
             "--max-answers", "2", "--seed", "3", "--ready-file", str(ready), "--threads", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    ports = json.loads(ready.read_text())
    assert "SMART Studio" in ports["input"] and "SMART Studio" in ports["output"]
    answers = [json.loads(line) for line in out.splitlines()]
    assert [(a["answer"], a["start_beat"], a["bars"]) for a in answers] == [(1, 4.0, 1), (2, 12.0, 1)]
    for a in answers:
        assert all(a["start_beat"] <= beat < a["start_beat"] + 4 for beat, *_ in a["notes"])
        assert isinstance(a["ready_ms_before"], float)


def test_jam_starts_its_phrases_again_when_the_daw_restarts():
    """Stop, cursor moved, Continue: the jam forgets the old take and answers from the new position."""
    import threading

    io = LiveIO(clock="follow")
    seen, answers = [], []
    jam = Jam(io, echo_generator(seen), JamOptions(listen_bars=1, answer_bars=1, max_answers=2),
              on_answer=answers.append)
    assert JamOptions(1, 1).first_phrase_from(8.0) == 1 and JamOptions(1, 1).first_phrase_from(9.0) == 2
    clock = [(t, bytes((CLOCK,))) for t in ticks(120, 0.0, 24 * 40)]
    first = [(0.0, bytes((START,)))] + clock[:24 * 6]  # 6 beats: answer 1 (beat 4) is played
    io.now = lambda: first_now[0]  # the simulated clock
    first_now = [0.0]
    worker = threading.Thread(target=jam.run)
    worker.start()
    t, k = 0.0, 0
    events = first + [(3.05, bytes((STOP,))), (3.1, song_position_message(16.0)), (3.2, bytes((CONTINUE,)))]
    events += [(t_ + 3.25, m) for t_, m in clock[:24 * 12]]
    events.sort(key=lambda e: e[0])
    while worker.is_alive() and t < 20.0:
        t += 0.005
        now_in = []
        while k < len(events) and events[k][0] < t:
            now_in.append(events[k])
            k += 1
        io.cycle(t - 0.005, t, now_in)
        first_now[0] = t
        time.sleep(0.0005)
    jam.stop()
    worker.join(5)
    assert [a.start_beat for a in answers] == [4.0, 20.0]  # after Continue at beat 16: phrase 2 → answer at 20
