"""Tests for engine.midi_io on real ports: a private JACK dummy server, rtmidi test clients."""

from __future__ import annotations

import time

import pytest

from jack_support import jack_server, jackd_missing_reason
from engine.midi_io import (
    MidiIn,
    MidiNoteEvent,
    MidiOut,
    MidiUnavailable,
    list_midi_ports,
    midi_api_names,
    midi_backend_status,
)

rtmidi = pytest.importorskip("rtmidi")

# JACK makes connections asynchronously (in a later process cycle, later still on a loaded
# machine): before a test's real messages, a ping is sent until it arrives. Pings are CC 119
# (an undefined controller) or, towards MidiIn (which passes on notes only), key 0.
PING_CC = 119
PING_KEY = 0


def handshake(send_ping, arrived, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        send_ping()
        if wait_for(arrived, timeout=0.05):
            time.sleep(0.05)  # let stray pings drain
            arrived()
            return
    raise AssertionError("JACK never connected the test ports")


JACKD_MISSING = jackd_missing_reason()
needs_jack = pytest.mark.skipif(JACKD_MISSING is not None, reason=JACKD_MISSING or "")


def wait_for(condition, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class Recorder:
    """An rtmidi input client (the "other program") collecting raw messages. It polls rtmidi's
    queue instead of using a callback: no Python in JACK's process thread."""

    def __init__(self, source_suffix: str):
        self.messages: list[list[int]] = []
        self.client = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="recorder")
        ports = self.client.get_ports()
        matches = [i for i, p in enumerate(ports) if p.endswith(source_suffix)]
        assert matches, f"{source_suffix!r} not among {ports}"
        self.client.open_port(matches[0])
        self.pinged = False

    def snapshot(self) -> list[list[int]]:
        while (item := self.client.get_message()) is not None:
            if item[0][:2] == [0xB0 | (item[0][0] & 0x0F), PING_CC]:
                self.pinged = True
            else:
                self.messages.append(item[0])
        return list(self.messages)

    def connect(self, out: MidiOut) -> None:
        handshake(lambda: out._enqueue(time.monotonic(), [0xB0, PING_CC, 0]),
                  lambda: self.snapshot() is not None and self.pinged)

    def close(self):
        self.client.close_port()
        self.client.delete()


# ---------------------------------------------------------------------------- no backend
def test_backend_status_reports_apis():
    available, text = midi_backend_status()
    assert isinstance(available, bool) and text
    for name in midi_api_names():
        assert name in text


def test_unknown_api_is_midi_unavailable():
    with pytest.raises(MidiUnavailable, match="unknown MIDI API"):
        MidiOut(api="NoSuchAPI")
    with pytest.raises(MidiUnavailable, match="unknown MIDI API"):
        MidiIn(None, lambda event: None, api="NoSuchAPI")
    with pytest.raises(MidiUnavailable, match="unknown MIDI API"):
        list_midi_ports(api="NoSuchAPI")


def test_api_not_compiled_in_is_midi_unavailable():
    missing = [name for name in ("CoreMIDI", "WinMM", "ALSA", "JACK") if name not in midi_api_names()]
    if not missing:
        pytest.skip("every MIDI API is compiled into this python-rtmidi")
    with pytest.raises(MidiUnavailable, match="not available in this build"):
        MidiOut(api=missing[0])


def test_jack_api_without_server_is_midi_unavailable(monkeypatch):
    if "JACK" not in midi_api_names():
        pytest.skip("python-rtmidi built without JACK")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", "smart-no-such-server")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    with pytest.raises(MidiUnavailable, match="JACK"):
        MidiOut(api="JACK")
    with pytest.raises(MidiUnavailable, match="JACK"):
        MidiIn(None, lambda event: None, api="JACK")
    with pytest.raises(MidiUnavailable):
        list_midi_ports(api="JACK")


def test_invalid_arguments():
    with pytest.raises(ValueError):
        MidiOut(channel=16)
    with pytest.raises(TypeError):
        MidiIn(None, callback="not callable")


# ---------------------------------------------------------------------------- real ports
@pytest.fixture(scope="module")
def jack():
    if "JACK" not in midi_api_names():
        pytest.skip("python-rtmidi built without JACK")
    with jack_server(portaudio=False) as server:
        yield server


@pytest.mark.jack
@pytest.mark.timeout(60)  # a wedged JACK client must fail the test, not hang CI
@needs_jack
def test_virtual_out_delivers_notes_in_order(jack):
    out = MidiOut(api="JACK", virtual_name="SMART Studio", channel=2)
    recorder = Recorder(":SMART Studio")
    try:
        recorder.connect(out)
        assert out.api_name == "JACK" and out.virtual
        assert any(p.endswith(":SMART Studio") for p in list_midi_ports("JACK")["inputs"])
        sent = []
        for i, pitch in enumerate([60, 64, 67, 72, 48]):
            out.send_note_on(pitch, 30 + 20 * i)
            out.send_note_off(pitch)
            sent += [[0x92, pitch, 30 + 20 * i], [0x82, pitch, 0]]
        out.send_note_on(50, 90, channel=9)
        sent.append([0x99, 50, 90])
        assert wait_for(lambda: len(recorder.snapshot()) >= len(sent))
        assert recorder.snapshot() == sent
        with pytest.raises(ValueError):
            out.send_note_on(128, 10)
    finally:
        out.close()
        recorder.close()


@pytest.mark.jack
@pytest.mark.timeout(60)  # a wedged JACK client must fail the test, not hang CI
@needs_jack
def test_all_notes_off_releases_sounding_notes(jack):
    out = MidiOut(api="JACK", virtual_name="SMART Studio", channel=0)
    recorder = Recorder(":SMART Studio")
    try:
        recorder.connect(out)
        out.send_note_on(60, 100)
        out.send_note_on(62, 100, channel=5)
        out.send_note_on(64, 100)
        out.send_note_off(64)
        # A message scheduled for later is dropped by all-notes-off (it must not ring after stop).
        out._schedule(time.monotonic() + 0.5, 0x90, 70, 100)
        out.all_notes_off()
        assert wait_for(lambda: [0xB5, 123, 0] in recorder.snapshot()), recorder.snapshot()
        time.sleep(0.7)
        got = recorder.snapshot()
        assert got[:4] == [[0x90, 60, 100], [0x95, 62, 100], [0x90, 64, 100], [0x80, 64, 0]]
        assert sorted(got[4:6]) == sorted([[0x80, 60, 0], [0x85, 62, 0]])
        assert sorted(got[6:]) == sorted([[0xB0, 123, 0], [0xB5, 123, 0]])
    finally:
        out.close()
        recorder.close()


@pytest.mark.jack
@pytest.mark.timeout(60)  # a wedged JACK client must fail the test, not hang CI
@needs_jack
def test_scheduled_messages_leave_at_their_time(jack):
    out = MidiOut(api="JACK", virtual_name="SMART Studio")
    arrivals: list[tuple[float, list[int]]] = []
    client = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="timer")

    def poll() -> bool:
        while (item := client.get_message()) is not None:
            if item[0][1] != PING_CC:
                arrivals.append((time.monotonic(), item[0]))
        return len(arrivals) == 3

    try:
        ports = client.get_ports()
        client.open_port([i for i, p in enumerate(ports) if p.endswith(":SMART Studio")][0])
        handshake(lambda: out._enqueue(time.monotonic(), [0xB0, PING_CC, 0]),
                  lambda: client.get_message() is not None)
        while client.get_message() is not None:  # drop the remaining pings
            pass
        start = time.monotonic()
        for k, delay in enumerate([0.3, 0.1, 0.2]):  # out of order on purpose
            out._schedule(start + delay, 0x90, 60 + k, 100)
        assert wait_for(poll, timeout=2.0)
        assert [m[1] for _, m in arrivals] == [61, 62, 60]  # sent by due time
        for (t, m), delay in zip(arrivals, [0.1, 0.2, 0.3]):
            assert delay - 0.005 <= t - start <= delay + 0.1  # never early; late only by load
    finally:
        out.close()
        client.close_port()
        client.delete()


@pytest.mark.jack
@pytest.mark.timeout(60)  # a wedged JACK client must fail the test, not hang CI
@needs_jack
def test_out_to_existing_port_and_missing_port(jack):
    sink = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="synth")
    sink.open_virtual_port("piano in")
    got = []

    pinged = []

    def received() -> list:
        while (item := sink.get_message()) is not None:
            (pinged if item[0][1] == PING_CC else got).append(item[0])
        return got
    try:
        out = MidiOut(port_name="piano in", api="JACK")  # a unique substring of "synth:piano in"
        try:
            assert not out.virtual and out.port_name.endswith("piano in")
            handshake(lambda: out._enqueue(time.monotonic(), [0xB0, PING_CC, 0]),
                      lambda: received() is not None and bool(pinged))
            out.send_note_on(65, 77)
            assert wait_for(lambda: received() == [[0x90, 65, 77]])
        finally:
            out.close()
        with pytest.raises(MidiUnavailable, match="not found"):
            MidiOut(port_name="no such synth", api="JACK")
    finally:
        sink.close_port()
        sink.delete()


@pytest.mark.jack
@pytest.mark.timeout(60)  # a wedged JACK client must fail the test, not hang CI
@needs_jack
def test_midi_in_delivers_note_events_with_timestamps(jack):
    events: list[MidiNoteEvent] = []
    failures = []

    pings = []

    def on_event(event: MidiNoteEvent):
        if event.pitch == PING_KEY:
            pings.append(event)
            return
        if event.pitch == 13:
            failures.append(event)
            raise RuntimeError("handler bug")  # must not stop later events
        events.append(event)

    midi_in = MidiIn(None, on_event, api="JACK", virtual_name="SMART Studio In")
    keyboard = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="keyboard")
    try:
        ports = keyboard.get_ports()
        keyboard.open_port([i for i, p in enumerate(ports) if p.endswith(":SMART Studio In")][0])
        handshake(lambda: keyboard.send_message([0x90, PING_KEY, 1]), lambda: bool(pings))
        before = time.monotonic()
        keyboard.send_message([0x90, 13, 1])
        keyboard.send_message([0xB0, 64, 127])  # pedal: not a note, not delivered
        keyboard.send_message([0x91, 60, 100])
        time.sleep(0.1)
        keyboard.send_message([0x91, 60, 0])  # note-on velocity 0 is a note-off
        keyboard.send_message([0x80, 62, 40])
        assert wait_for(lambda: len(events) == 3), (events, failures)
        assert [(e.kind, e.pitch, e.velocity, e.channel) for e in events] == [
            ("note_on", 60, 100, 1), ("note_off", 60, 0, 1), ("note_off", 62, 40, 0)]
        stamps = [e.timestamp for e in events]
        assert before <= stamps[0] <= stamps[1] <= stamps[2] <= time.monotonic()
        assert stamps[1] - stamps[0] >= 0.05  # arrival times, not one batch
        assert failures and midi_in.callback_error and "handler bug" in midi_in.callback_error
    finally:
        keyboard.close_port()
        keyboard.delete()
        midi_in.close()


@pytest.mark.jack
@pytest.mark.timeout(60)  # a wedged JACK client must fail the test, not hang CI
@needs_jack
def test_midi_in_from_existing_port(jack):
    keyboard = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name="keys")
    keyboard.open_virtual_port("keys out")
    events = []
    try:
        assert any(p.endswith("keys out") for p in list_midi_ports("JACK")["inputs"])
        midi_in = MidiIn("keys out", events.append, api="JACK")
        try:
            handshake(lambda: keyboard.send_message([0x90, PING_KEY, 1]),
                      lambda: any(e.pitch == PING_KEY for e in events))
            keyboard.send_message([0x90, 72, 64])
            assert wait_for(lambda: any(e.pitch == 72 for e in events))
            notes = [e for e in events if e.pitch != PING_KEY]
            assert len(notes) == 1 and notes[0].kind == "note_on" and notes[0].velocity == 64
        finally:
            midi_in.close()
        with pytest.raises(MidiUnavailable, match="not found"):
            MidiIn("nonexistent keyboard", events.append, api="JACK")
    finally:
        keyboard.close_port()
        keyboard.delete()
