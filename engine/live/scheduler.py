"""Live MIDI on the beat grid: the one timing owner of live play (clock follow or lead, notes on time).

`LiveIO` keeps the clock (`ClockFollower` when following a DAW, `ClockLeader` when the studio
leads) and a queue of notes placed on *beats*, not seconds: each output cycle converts the beats
due in it to times with the clock's current mapping, so notes stay on the grid when the DAW's
tempo moves. Everything runs in `cycle(t0, t1, incoming)`, which both back ends call:

* `JackLiveIO` — JACK's process callback: incoming events carry their exact frame, outgoing ones
  are written at exact frame offsets (`write_midi_event`), so onsets are sample-accurate.
* `RtmidiLiveIO` — elsewhere (ALSA, CoreMIDI, WinMM): a dedicated thread wakes a little before
  the next event and sends it through python-rtmidi; inputs are stamped on arrival.

Other threads talk to a LiveIO only through thread-safe queues (`schedule_note`, `all_notes_off`,
`locate`, `input_events`, `transport_events`), never by touching the cycle's state.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

from engine.live.clock import CLOCK, SONG_POSITION, ClockFollower, ClockLeader, song_position_message

os.environ.setdefault("JACK_NO_START_SERVER", "1")
log = logging.getLogger(__name__)

CLIENT_NAME = "SMART Studio"
NOTE_ON, NOTE_OFF, CONTROL_CHANGE = 0x90, 0x80, 0xB0
ALL_NOTES_OFF_CC = 123


class LiveUnavailable(RuntimeError):
    """No JACK server / MIDI backend to play live with (one-line reason)."""


@dataclass(frozen=True)
class InputEvent:
    time: float  # seconds on the LiveIO clock
    beat: float | None  # beat at that time (None while the clock is stopped)
    data: bytes


@dataclass(frozen=True)
class TransportEvent:
    """What the clock's transport did, for a UI that follows it: "start" (Start/Continue's first tick, or
    the internal clock starting) at `beat`, "stop", or "locate" (Song Position Pointer while stopped)."""

    kind: str
    beat: float | None
    time: float


@dataclass(frozen=True)
class SentEvent:
    time: float  # when it left (JACK: its exact frame / sample rate)
    due: float  # when it should have left
    data: bytes


class LiveIO:
    """Clock + beat-scheduled notes; back ends call `cycle` and deliver what it returns."""

    def __init__(self, clock: str = "follow", bpm: float = 120.0, channel: int = 0, sent_log: int = 100_000):
        if clock not in ("follow", "internal"):
            raise ValueError("clock must be 'follow' or 'internal'")
        self.mode = clock
        self.bpm = bpm
        self.channel = channel
        self.follower = ClockFollower(on_stop=self._on_clock_stop, on_start=self._on_clock_start)
        self.transport_starts = 0  # Start/Continue seen (a jam restarts its phrases on each)
        self.start_beat = 0.0
        self.leader: ClockLeader | None = None
        self._requests: queue.SimpleQueue = queue.SimpleQueue()  # (beat, seq, bytes) or commands
        self._heap: list[tuple[float, int, bytes]] = []  # on the beat grid (a jam's answers)
        self._timed: list[tuple[float, int, bytes]] = []  # at clock times (the studio's playback)
        self._sounding_timed: set[tuple[int, int]] = set()  # (channel, pitch) a timed note-on left sounding
        self._silence_timed = False
        self._seq = itertools.count()
        self._sounding: set[int] = set()
        self._silence = False
        self._pending_stop = False
        self._pending_position: float | None = None
        self.input_events: queue.SimpleQueue[InputEvent] = queue.SimpleQueue()
        self.transport_events: queue.SimpleQueue[TransportEvent] = queue.SimpleQueue()
        self._cycle_t0 = 0.0
        self.sent: deque[SentEvent] = deque(maxlen=sent_log)
        self.late_events = 0

    # ------------------------------------------------------------------ any thread
    def start_internal(self, at: float, start_beat: float = 0.0) -> None:
        """Lead: run the transport from `at` (seconds on this clock), sending clock, SPP and Start."""
        self._requests.put(("lead", ClockLeader(self.bpm, at, start_beat)))

    def stop_internal(self) -> None:
        self._requests.put(("stop", None))

    def locate(self, beat: float) -> None:
        """Lead, while stopped: send a Song Position Pointer for `beat` (a DAW moves its cursor there)."""
        self._requests.put(("position", beat))

    def schedule_note(self, beat: float, pitch: int, velocity: int, duration_beats: float) -> None:
        self._requests.put(("note", (beat, bytes((NOTE_ON | self.channel, pitch, velocity)))))
        self._requests.put(("note", (beat + max(duration_beats, 1 / 96), bytes((NOTE_OFF | self.channel, pitch, 0)))))

    def all_notes_off(self) -> None:
        self._requests.put(("silence", None))

    def schedule_message_at(self, t: float, data: bytes) -> None:
        """Send `data` at time `t` on this back end's clock (`now()`): for a source that knows when each of
        its events sounds, such as the studio's audio playback. Never blocks (safe in an audio callback)."""
        self._requests.put(("timed", (t, bytes(data))))

    def silence_timed(self) -> None:
        """Drop the timed messages still queued and end the notes they left sounding (the playback stopped
        or jumped); notes on the beat grid — a jam's answers — go on."""
        self._requests.put(("silence-timed", None))

    def beat_at(self, t: float) -> float | None:
        if self.leader is not None:
            return self.leader.beat_at(t) if t >= self.leader.start_time else None
        return self.follower.beat_at(t)

    def time_of_beat(self, beat: float) -> float | None:
        if self.leader is not None:
            return self.leader.time_of_beat(beat)
        return self.follower.time_of_beat(beat)

    @property
    def tempo(self) -> float | None:
        return self.leader.bpm if self.leader is not None else self.follower.bpm

    def now(self) -> float:  # the back end's clock
        raise NotImplementedError

    # ------------------------------------------------------------------ the cycle
    def _on_clock_stop(self) -> None:
        self._silence = True
        self.transport_events.put(TransportEvent("stop", None, self._cycle_t0))

    def _on_clock_start(self, beat: float) -> None:
        self.start_beat = beat
        self.transport_starts += 1
        self.transport_events.put(TransportEvent("start", beat, self._cycle_t0))

    def _drain_requests(self) -> None:
        while True:
            try:
                kind, value = self._requests.get_nowait()
            except queue.Empty:
                return
            if kind == "note":
                heapq.heappush(self._heap, (value[0], next(self._seq), value[1]))
            elif kind == "timed":
                heapq.heappush(self._timed, (value[0], next(self._seq), value[1]))
            elif kind == "silence-timed":
                self._silence_timed = True
            elif kind == "silence":
                self._silence = True
            elif kind == "lead":
                self.leader = value
                # A (re)start of the transport, as a DAW's Start/Continue is when following.
                self.start_beat = value.start_beat
                self.transport_starts += 1
                self.transport_events.put(TransportEvent("start", value.start_beat, value.start_time))
            elif kind == "stop":
                if self.leader is not None:
                    self.transport_events.put(TransportEvent("stop", None, self._cycle_t0))
                self.leader = None
                self._silence = True
                self._pending_stop = True
            elif kind == "position":
                self._pending_position = value

    def cycle(self, t0: float, t1: float, incoming: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
        """Events (time, bytes) to send in [t0, t1), in time order; `incoming` arrived in it."""
        self._cycle_t0 = t0
        self._drain_requests()
        for t, data in incoming:
            if data and data[0] >= 0xF0:
                if self.mode == "follow":
                    self._cycle_t0 = t
                    self.follower.on_message(data, t)
                    if data[0] == SONG_POSITION and not self.follower.running:
                        self.transport_events.put(TransportEvent("locate", self.follower.position_beats, t))
            else:
                self.input_events.put(InputEvent(t, self.beat_at(t), bytes(data)))
        out: list[tuple[float, bytes]] = []
        if self._pending_stop:
            out.append((t0, bytes((0xFC,))))
            self._pending_stop = False
        if self._pending_position is not None:
            if self.leader is None:  # SPP is only for a stopped transport; a running leader announces its own
                out.append((t0, song_position_message(self._pending_position)))
            self._pending_position = None
        if self.leader is not None:
            out += self.leader.messages(t0, t1)
        if self._silence:
            self._silence = False
            self._silence_timed = True
            self._heap.clear()
            out += [(t0, bytes((NOTE_OFF | self.channel, p, 0))) for p in sorted(self._sounding)]
            out.append((t0, bytes((CONTROL_CHANGE | self.channel, ALL_NOTES_OFF_CC, 0))))
            self._sounding.clear()
        if self._silence_timed:
            self._silence_timed = False
            self._timed.clear()
            out += [(t0, bytes((NOTE_OFF | ch, p, 0))) for ch, p in sorted(self._sounding_timed)]
            self._sounding_timed.clear()
        while self._timed and self._timed[0][0] < t1:
            due, _seq, data = heapq.heappop(self._timed)
            if data[0] & 0xF0 == NOTE_ON and data[2] > 0:
                self._sounding_timed.add((data[0] & 0x0F, data[1]))
            elif data[0] & 0xF0 in (NOTE_ON, NOTE_OFF):
                self._sounding_timed.discard((data[0] & 0x0F, data[1]))
            out.append((max(due, t0), data))  # late (queued after its time): now
        while self._heap:
            beat, _seq, data = self._heap[0]
            due = self.time_of_beat(beat)
            if due is None or due >= t1:
                break
            heapq.heappop(self._heap)
            if data[0] & 0xF0 == NOTE_ON:
                self._sounding.add(data[1])
            else:
                self._sounding.discard(data[1])
            out.append((due, data))
        out.sort(key=lambda e: e[0])  # stable: SPP/Start before the tick at the same time
        return out

    def _sent(self, when: float, due: float, data: bytes) -> None:
        if data[0] != CLOCK:
            self.sent.append(SentEvent(when, due, data))
        if when - due > 1e-3:
            self.late_events += 1

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class JackLiveIO(LiveIO):
    """Ports `<client>:in` and `<client>:out` on a JACK server; events at exact frame offsets.

    Incoming events are stamped with the frame JACK delivers them at. A client that both sends us
    its clock and listens to our output closes a loop in JACK's graph, which JACK breaks with one
    period of delay on one side: then our notes reach it one period (e.g. 256 frames, 5.3 ms at
    48 kHz) after its tick. Where the DAW is only the clock source, or our output goes to another
    client (a synth, another track's input), notes land on its ticks to the frame.
    """

    def __init__(self, client_name: str = CLIENT_NAME, input_port: str | None = None,
                 output_port: str | None = None, servername: str | None = None, **kwargs):
        super().__init__(**kwargs)
        try:
            import jack
        except (ImportError, OSError) as exc:
            raise LiveUnavailable(f"JACK-Client cannot load libjack: {exc}") from None
        try:
            self.client = jack.Client(client_name, no_start_server=True, servername=servername)
        except jack.JackError as exc:
            raise LiveUnavailable(f"no JACK server to connect to ({exc})") from None
        self.rate = self.client.samplerate
        self.inport = self.client.midi_inports.register("in")
        self.outport = self.client.midi_outports.register("out")
        self.client.set_process_callback(self._process)
        self.client.activate()
        try:
            if input_port:
                self.client.connect(input_port, self.inport)
            if output_port:
                self.client.connect(self.outport, output_port)
        except jack.JackError as exc:
            self.close()
            raise LiveUnavailable(f"cannot connect the live ports: {exc}") from None

    @property
    def input_name(self) -> str:
        return self.inport.name

    @property
    def output_name(self) -> str:
        return self.outport.name

    def now(self) -> float:
        return self.client.frame_time / self.rate

    def _process(self, frames: int) -> None:
        f0 = self.client.last_frame_time
        incoming = [((f0 + offset) / self.rate, bytes(data)) for offset, data in self.inport.incoming_midi_events()]
        events = self.cycle(f0 / self.rate, (f0 + frames) / self.rate, incoming)
        self.outport.clear_buffer()
        for due, data in events:
            offset = min(frames - 1, max(0, round(due * self.rate) - f0))
            self.outport.write_midi_event(offset, data)
            self._sent((f0 + offset) / self.rate, due, data)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.deactivate()  # no process callback runs after this
            client.close()
            self.client = None


class RtmidiLiveIO(LiveIO):
    """python-rtmidi ports and a sender thread that sleeps until just before each event is due."""

    SPIN_SECONDS = 0.002  # the last stretch before an event is busy-waited: sleep overshoots ~1 ms
    IDLE_SECONDS = 0.001

    def __init__(self, api: str | None = None, input_port: str | None = None, output_port: str | None = None,
                 client_name: str = CLIENT_NAME, **kwargs):
        super().__init__(**kwargs)
        from engine.midi_io import MidiUnavailable, _find_port, _open_client

        try:
            self._out, out_api = _open_client("out", api)
            self._in, _ = _open_client("in", api)
            self._in.ignore_types(sysex=True, timing=False, active_sense=True)
            if output_port:
                self._out.open_port(_find_port(self._out.get_ports(), output_port, "output", out_api))
                self.output_name = output_port
            else:
                self._out.open_virtual_port(f"{client_name} out")
                self.output_name = f"{client_name} out"
            if input_port:
                self._in.open_port(_find_port(self._in.get_ports(), input_port, "input", out_api))
                self.input_name = input_port
            else:
                self._in.open_virtual_port(f"{client_name} in")
                self.input_name = f"{client_name} in"
        except MidiUnavailable as exc:
            raise LiveUnavailable(str(exc)) from None
        except Exception as exc:  # rtmidi raises its own types per backend (e.g. no virtual ports on WinMM)
            raise LiveUnavailable(f"cannot open live MIDI ports: {exc} (on Windows, create ports with "
                                  "loopMIDI or Windows MIDI Services and pass --input/--output)") from None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-midi", daemon=True)
        self._thread.start()

    def now(self) -> float:
        return time.monotonic()

    def _run(self) -> None:
        last = self.now()
        while not self._stop.is_set():
            incoming = []
            while (msg := self._in.get_message()) is not None:
                incoming.append((self.now(), bytes(msg[0])))
            now = self.now()
            for due, data in self.cycle(last, now + self.SPIN_SECONDS, incoming):
                while (t := self.now()) < due:
                    pass  # at most SPIN_SECONDS of busy wait
                self._out.send_message(list(data))
                self._sent(self.now(), due, data)
            last = now + self.SPIN_SECONDS
            time.sleep(self.IDLE_SECONDS)

    def close(self) -> None:
        if getattr(self, "_stop", None) is not None and not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=1.0)
            for p in sorted(self._sounding):
                self._out.send_message([NOTE_OFF | self.channel, p, 0])
            self._out.send_message([CONTROL_CHANGE | self.channel, ALL_NOTES_OFF_CC, 0])
        for port in ("_in", "_out"):
            dev = getattr(self, port, None)
            if dev is not None:
                dev.close_port()
                delattr(self, port)


class LiveMidiOut:
    """The studio's playback MIDI through a LiveIO, the one timing owner for what goes to a DAW while Sync
    is on. It takes what `engine.playback.Player` hands a `MidiOut` (a channel-voice message stamped with
    the monotonic time its audio sample plays, from the audio callback) and queues it at that time on the
    back end's clock: through JACK it leaves at the exact frame instead of from a sender thread's sleep."""

    def __init__(self, io: LiveIO, channel: int = 0):
        self.io = io
        self.channel = channel
        self.port_name = getattr(io, "output_name", "live output")

    def _schedule(self, due: float, status: int, pitch: int, velocity: int) -> None:
        # The two clocks read back to back: their offset maps the player's monotonic stamp to the back end's.
        t = self.io.now() + (due - time.monotonic())
        self.io.schedule_message_at(t, bytes((status | self.channel, pitch, velocity)))

    def _request_all_notes_off(self) -> None:
        self.io.silence_timed()

    def close(self) -> None:
        self._request_all_notes_off()


def open_live_io(api: str | None, **kwargs) -> LiveIO:
    """JACK when asked for (or when a JACK server answers and no other API is named); else rtmidi."""
    if api in (None, "jack"):
        try:
            return JackLiveIO(**{k: v for k, v in kwargs.items() if k != "client_name"})
        except LiveUnavailable:
            if api == "jack":
                raise
    return RtmidiLiveIO(api=api, **kwargs)


def live_ports(api: str | None = None) -> dict:
    """{"backend": "jack" | rtmidi's API name, "inputs": [...], "outputs": [...]}: the ports `open_live_io(api)`
    could connect to — JACK's MIDI ports when it would use JACK, else rtmidi's. "inputs" send to us (a DAW's
    clock, a keyboard), "outputs" take what we send. Raises LiveUnavailable when there is no backend."""
    if api in (None, "jack"):
        try:
            import jack

            client = jack.Client(f"{CLIENT_NAME} ports", no_start_server=True)
        except (ImportError, OSError, Exception) as exc:  # jack.JackError: no server
            if api == "jack":
                raise LiveUnavailable(f"no JACK server to list ports of ({exc})") from None
        else:
            try:
                own = (CLIENT_NAME + ":", CLIENT_NAME + "-")  # this studio's own live client(s)
                inputs = [p.name for p in client.get_ports(is_midi=True, is_output=True) if not p.name.startswith(own)]
                outputs = [p.name for p in client.get_ports(is_midi=True, is_input=True) if not p.name.startswith(own)]
            finally:
                client.close()
            return {"backend": "jack", "inputs": inputs, "outputs": outputs}
    from engine.midi_io import MidiUnavailable, _open_client, list_midi_ports

    try:
        client, name = _open_client("out", api)
        client.delete()
        ports = list_midi_ports(api)
    except MidiUnavailable as exc:
        raise LiveUnavailable(str(exc)) from None
    own = ("SMART Studio",)
    return {"backend": name, "inputs": [p for p in ports["inputs"] if not p.startswith(own)],
            "outputs": [p for p in ports["outputs"] if not p.startswith(own)]}
