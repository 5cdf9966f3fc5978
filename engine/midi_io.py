"""Live MIDI in and out through python-rtmidi (ALSA, JACK, CoreMIDI or WinMM).

`MidiOut` owns a sender thread: messages are queued with the wall time (`time.monotonic()`)
at which they should leave, and the thread sends them then. The audio callback only appends
to a deque (no rtmidi call, no lock), so MIDI out can never stall audio. `MidiIn` owns a
reader thread that delivers note-on/off events with arrival timestamps to a user callback.
Neither ever runs Python in the MIDI backend's own (real-time) thread.

No usable backend (rtmidi missing, API not compiled in, its server/sequencer absent, port
not found) raises `MidiUnavailable` with a one-line reason; nothing else depends on MIDI.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

# Never let a MIDI client spawn a JACK server as a side effect of opening a port.
os.environ.setdefault("JACK_NO_START_SERVER", "1")

log = logging.getLogger(__name__)

__all__ = [
    "MidiIn",
    "MidiNoteEvent",
    "MidiOut",
    "MidiUnavailable",
    "list_midi_ports",
    "midi_backend_status",
    "midi_api_names",
]

CLIENT_NAME = "SMART Studio"
# Sender thread poll interval: short while MIDI is flowing, longer when idle (saves CPU; the
# playback schedules messages one output latency ahead, so the first one is still on time).
_BUSY_POLL_SECONDS = 0.0005
_IDLE_POLL_SECONDS = 0.004
_IDLE_AFTER_SECONDS = 1.0
_INPUT_IDLE_POLL_SECONDS = 0.002
_FLUSH_WAIT_SECONDS = 1.0
# MidiIn places a burst read in one poll back by rtmidi's deltas, but at most this far.
_MAX_STAMP_DRIFT_SECONDS = 1.0


class MidiUnavailable(RuntimeError):
    """Live MIDI cannot be used: no backend, API, server, or the port does not exist."""


# ---------------------------------------------------------------------------- backend
def _rtmidi():
    try:
        import rtmidi
    except ImportError as exc:
        raise MidiUnavailable(f"python-rtmidi is not installed or failed to load: {exc}") from None
    return rtmidi


# User-facing API names -> rtmidi constant attribute names.
_API_ALIASES = {
    "alsa": "API_LINUX_ALSA",
    "linux_alsa": "API_LINUX_ALSA",
    "jack": "API_UNIX_JACK",
    "unix_jack": "API_UNIX_JACK",
    "coremidi": "API_MACOSX_CORE",
    "core": "API_MACOSX_CORE",
    "macosx_core": "API_MACOSX_CORE",
    "winmm": "API_WINDOWS_MM",
    "windows_mm": "API_WINDOWS_MM",
    "mm": "API_WINDOWS_MM",
}
_API_DISPLAY = {"API_LINUX_ALSA": "ALSA", "API_UNIX_JACK": "JACK",
                "API_MACOSX_CORE": "CoreMIDI", "API_WINDOWS_MM": "WinMM"}


def midi_api_names() -> list[str]:
    """Names of the MIDI APIs compiled into python-rtmidi (e.g. ["ALSA", "JACK"])."""
    rtmidi = _rtmidi()
    return [_display_name(rtmidi, api) for api in rtmidi.get_compiled_api()
            if api != getattr(rtmidi, "API_RTMIDI_DUMMY", -1)]


def _display_name(rtmidi, api: int) -> str:
    for attr, display in _API_DISPLAY.items():
        if getattr(rtmidi, attr, None) == api:
            return display
    return rtmidi.get_api_display_name(api)


def _api_constant(rtmidi, api: str) -> int:
    if not isinstance(api, str):
        raise MidiUnavailable(f"MIDI API must be a name like 'ALSA' or 'JACK', got {api!r}")
    attr = _API_ALIASES.get(api.strip().lower().replace(" ", "_"))
    if attr is None or not hasattr(rtmidi, attr):
        raise MidiUnavailable(f"unknown MIDI API {api!r}; known: ALSA, JACK, CoreMIDI, WinMM")
    constant = getattr(rtmidi, attr)
    if constant not in rtmidi.get_compiled_api():
        raise MidiUnavailable(f"MIDI API {_API_DISPLAY[attr]} is not available in this build of "
                              f"python-rtmidi (available: {', '.join(midi_api_names()) or 'none'})")
    return constant


def _open_client(kind: str, api: str | None):
    """An rtmidi MidiIn/MidiOut client on `api` (None: rtmidi's default, then the others).

    Returns (client, api display name)."""
    rtmidi = _rtmidi()
    factory = rtmidi.MidiIn if kind == "in" else rtmidi.MidiOut
    if api is not None:
        candidates = [_api_constant(rtmidi, api)]
    else:
        candidates = [a for a in rtmidi.get_compiled_api() if a != getattr(rtmidi, "API_RTMIDI_DUMMY", -1)]
        if not candidates:
            raise MidiUnavailable("python-rtmidi was built without any MIDI API")
    reasons = []
    for constant in candidates:
        name = _display_name(rtmidi, constant)
        try:
            return factory(constant, name=CLIENT_NAME), name
        except (rtmidi.RtMidiError, RuntimeError, OSError) as exc:
            reasons.append(f"{name}: {_reason(exc)}")
    raise MidiUnavailable("no MIDI backend could start (" + "; ".join(reasons) + ")")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    # rtmidi prefixes messages with the C++ method name ("MidiOutAlsa::initialize: ...").
    return message.split(": ", 1)[1] if "::" in message.split(": ", 1)[0] else message


def _find_port(ports: list[str], wanted: str, direction: str, api_name: str) -> int:
    """Index of `wanted` among `ports`: exact name, else a unique case-insensitive substring."""
    if not isinstance(wanted, str) or not wanted.strip():
        raise MidiUnavailable(f"MIDI {direction} port name must be a non-empty string, got {wanted!r}")
    if wanted in ports:
        return ports.index(wanted)
    matches = [i for i, port in enumerate(ports) if wanted.lower() in port.lower()]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(repr(p) for p in ports) or "none"
    if matches:
        raise MidiUnavailable(f"MIDI {direction} port {wanted!r} is ambiguous on {api_name}: {listing}")
    raise MidiUnavailable(f"MIDI {direction} port {wanted!r} not found on {api_name} (available: {listing})")


def _check_channel(channel) -> int:
    if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel <= 15:
        raise ValueError(f"MIDI channel must be an integer 0-15, got {channel!r}")
    return channel


def _check_data(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 127:
        raise ValueError(f"MIDI {what} must be an integer 0-127, got {value!r}")
    return value


def list_midi_ports(api: str | None = None) -> dict:
    """{"inputs": [...], "outputs": [...]}: ports other programs offer on `api`.

    "inputs" are ports MidiIn can listen to (keyboards); "outputs" are ports MidiOut can send
    to (synths). Raises MidiUnavailable when the backend cannot start."""
    client_in, _ = _open_client("in", api)
    try:
        inputs = client_in.get_ports()
    finally:
        client_in.delete()
    client_out, _ = _open_client("out", api)
    try:
        outputs = client_out.get_ports()
    finally:
        client_out.delete()
    return {"inputs": inputs, "outputs": outputs}


def midi_backend_status() -> tuple[bool, str]:
    """(available, text): whether any MIDI API can start here, and which / why not."""
    try:
        rtmidi = _rtmidi()
    except MidiUnavailable as exc:
        return False, str(exc)
    working, failing = [], []
    for constant in rtmidi.get_compiled_api():
        if constant == getattr(rtmidi, "API_RTMIDI_DUMMY", -1):
            continue
        name = _display_name(rtmidi, constant)
        try:
            rtmidi.MidiOut(constant, name=CLIENT_NAME).delete()
            working.append(name)
        except (rtmidi.RtMidiError, RuntimeError, OSError) as exc:
            failing.append(f"{name} unavailable: {_reason(exc)}")
    if working:
        return True, "MIDI APIs available: " + ", ".join(working) + (
            " (" + "; ".join(failing) + ")" if failing else "")
    if not failing:
        return False, "python-rtmidi was built without any MIDI API"
    return False, "no MIDI API works: " + "; ".join(failing)


# ---------------------------------------------------------------------------- a port
class _Port:
    """What a MIDI output and input share (as mido's BasePort): one rtmidi client with a virtual port named
    `virtual_name` (port_name None) or an existing port opened, a worker thread (`_thread`, started by the
    subclass), closing once, and `with`."""

    _DIRECTION = ""  # "out" | "in"
    _NOUN = ""  # "MIDI port" | "MIDI input": how errors name it

    def _open(self, port_name: str | None, virtual_name: str, api: str | None, client_name: str) -> None:
        self._client, self.api_name = _open_client(self._DIRECTION, api)
        rtmidi = _rtmidi()
        try:
            if port_name is None:
                if not isinstance(virtual_name, str) or not virtual_name.strip():
                    raise MidiUnavailable(f"virtual port name must be a non-empty string, got {virtual_name!r}")
                self._client.open_virtual_port(virtual_name)
                self.port_name = virtual_name
                self.virtual = True
            else:
                ports = self._client.get_ports()
                index = _find_port(ports, port_name, "output" if self._DIRECTION == "out" else "input",
                                   self.api_name)
                self._client.open_port(index, name=client_name)
                self.port_name = ports[index]
                self.virtual = False
        except (rtmidi.RtMidiError, NotImplementedError, RuntimeError, OSError) as exc:
            self._client.delete()
            what = f"virtual {self._NOUN}" if port_name is None else f"{self._NOUN} {port_name!r}"
            raise MidiUnavailable(f"cannot open {what} on {self.api_name}: {_reason(exc)}") from None
        except MidiUnavailable:
            self._client.delete()
            raise
        self._closed = False

    def _before_close(self) -> None:
        """What the subclass does first when closing (its thread still runs)."""

    def close(self) -> None:
        """Stop the worker thread and close the port. Safe to call twice."""
        if self._closed:
            return
        self._before_close()
        self._closed = True
        self._thread.join(timeout=2.0)
        try:
            self._client.close_port()
        finally:
            self._client.delete()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---------------------------------------------------------------------------- MIDI out
class MidiOut(_Port):
    """A MIDI output: a virtual port named `virtual_name` (port_name None) or an existing port.

    Messages go out on a sender thread at their scheduled wall time; `send_note_on/off` send
    as soon as possible. Raises MidiUnavailable when the port cannot be opened.
    """

    _DIRECTION, _NOUN = "out", "MIDI port"

    def __init__(self, port_name: str | None = None, virtual_name: str = "SMART Studio",
                 api: str | None = None, channel: int = 0):
        self._channel = _check_channel(channel)
        self._open(port_name, virtual_name, api, CLIENT_NAME)
        # Inbox: (due, sequence, message) tuples or ("flush", event) markers, appended by any
        # thread (the audio callback included) and drained by the sender in order.
        self._inbox: deque = deque()
        self._sequence = 0
        self._sounding: set[tuple[int, int]] = set()  # (channel, pitch) sent on, not yet off
        self.send_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"midi-out {self.port_name}", daemon=True)
        self._thread.start()

    @property
    def channel(self) -> int:
        return self._channel

    @channel.setter
    def channel(self, channel: int) -> None:
        self._channel = _check_channel(channel)

    # ---------------------------------------------------------------- sending
    def send_note_on(self, pitch: int, velocity: int, channel: int | None = None) -> None:
        channel = self._channel if channel is None else _check_channel(channel)
        self._enqueue(time.monotonic(), [0x90 | channel, _check_data(pitch, "pitch"),
                                         _check_data(velocity, "velocity")])

    def send_note_off(self, pitch: int, channel: int | None = None) -> None:
        channel = self._channel if channel is None else _check_channel(channel)
        self._enqueue(time.monotonic(), [0x80 | channel, _check_data(pitch, "pitch"), 0])

    def all_notes_off(self) -> None:
        """Note-off for every note this port left sounding, then CC 123 (all notes off) on
        every channel used. Messages already due are sent first; messages scheduled for
        later are dropped. Waits (up to a second) until sent."""
        done = threading.Event()
        self._inbox.append(("flush", done))
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            done.wait(_FLUSH_WAIT_SECONDS)

    def _schedule(self, due: float, status: int, pitch: int, velocity: int) -> None:
        """For the player: send a channel-voice message at wall time `due` (monotonic).
        `status` is 0x90/0x80 without channel. Never blocks or raises (audio callback); a
        closed port drops it."""
        if not self._closed:
            self._sequence += 1
            self._inbox.append((due, self._sequence, [status | self._channel, pitch, velocity]))

    def _request_all_notes_off(self) -> None:
        """all_notes_off without waiting (safe in the audio callback)."""
        if not self._closed:
            self._inbox.append(("flush", None))

    def _enqueue(self, due: float, message: list[int]) -> None:
        if self._closed:
            raise MidiUnavailable(f"MIDI output {self.port_name!r} is closed")
        self._sequence += 1
        self._inbox.append((due, self._sequence, message))

    # ---------------------------------------------------------------- sender thread
    def _run(self) -> None:
        pending: list = []  # heap of (due, sequence, message)
        last_activity = time.monotonic()
        while True:
            inbox = self._inbox
            while inbox:
                item = inbox.popleft()
                if item[0] == "flush":
                    # Messages already due go out first; ones scheduled for later are dropped.
                    now = time.monotonic()
                    while pending and pending[0][0] <= now:
                        self._send(heapq.heappop(pending)[2])
                    pending.clear()
                    self._flush()
                    if item[1] is not None:
                        item[1].set()
                else:
                    heapq.heappush(pending, item)
            now = time.monotonic()
            while pending and pending[0][0] <= now:
                self._send(heapq.heappop(pending)[2])
                last_activity = now
            if self._closed and not inbox:
                break
            if pending:
                time.sleep(max(min(pending[0][0] - now, _BUSY_POLL_SECONDS), 0.0))
            elif now - last_activity < _IDLE_AFTER_SECONDS:
                time.sleep(_BUSY_POLL_SECONDS)
            else:
                time.sleep(_IDLE_POLL_SECONDS)

    def _send(self, message: list[int]) -> None:
        status, channel = message[0] & 0xF0, message[0] & 0x0F
        if status == 0x90 and message[2] > 0:
            self._sounding.add((channel, message[1]))
        elif status in (0x80, 0x90):
            self._sounding.discard((channel, message[1]))
        try:
            self._client.send_message(message)
        except Exception as exc:  # a vanished port: remember why, keep the thread alive
            if self.send_error is None:
                self.send_error = f"MIDI send failed on {self.port_name!r}: {_reason(exc)}"
                log.warning(self.send_error)

    def _flush(self) -> None:
        channels = {self._channel} | {channel for channel, _ in self._sounding}
        for channel, pitch in sorted(self._sounding):
            self._send([0x80 | channel, pitch, 0])
        for channel in sorted(channels):
            self._send([0xB0 | channel, 123, 0])
        self._sounding.clear()

    # ---------------------------------------------------------------- lifetime
    def _before_close(self) -> None:
        self._inbox.append(("flush", None))  # all notes off before the sender stops

    def __repr__(self) -> str:
        return f"MidiOut({self.port_name!r}, api={self.api_name!r}, channel={self._channel})"


# ---------------------------------------------------------------------------- MIDI in
@dataclass(frozen=True, slots=True)
class MidiNoteEvent:
    """A note from a MIDI input. `timestamp` is `time.monotonic()` at arrival (seconds);
    `delta` is rtmidi's time since the previous message on the port."""

    kind: str  # "note_on" or "note_off" (note-on with velocity 0 arrives as "note_off")
    pitch: int
    velocity: int
    channel: int
    timestamp: float
    delta: float


class MidiIn(_Port):
    """A MIDI input calling `callback(MidiNoteEvent)` for every note on/off.

    port_name None opens a virtual input port named `virtual_name` that other programs (or a
    keyboard, via a patchbay) connect to; otherwise an existing port is opened. rtmidi queues
    incoming messages and a reader thread of ours delivers them, so no Python code (and no
    GIL) runs in the backend's real-time thread (JACK's process callback). The callback runs
    on that reader thread: keep it short (hand off to the UI thread). Exceptions it raises are
    logged and do not stop input. Raises MidiUnavailable.
    """

    _DIRECTION, _NOUN = "in", "MIDI input"

    def __init__(self, port_name: str | None, callback: Callable[[MidiNoteEvent], None],
                 api: str | None = None, virtual_name: str = "SMART Studio In"):
        if not callable(callback):
            raise TypeError(f"MidiIn callback must be callable, got {type(callback).__name__}")
        self._callback = callback
        self._open(port_name, virtual_name, api, f"{CLIENT_NAME} In")
        self.callback_error: str | None = None
        self._last_stamp: float | None = None
        self._client.ignore_types(sysex=True, timing=True, active_sense=True)
        self._thread = threading.Thread(target=self._run, name=f"midi-in {self.port_name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = self._client
        last_activity = 0.0
        while not self._closed:
            batch = []
            try:
                while (item := client.get_message()) is not None:
                    batch.append(item)
            except Exception as exc:  # port torn down under us: stop reading
                if not self._closed:
                    log.warning("MIDI input %r stopped: %s", self.port_name, _reason(exc))
                return
            now = time.monotonic()
            if not batch:
                busy = now - last_activity < _IDLE_AFTER_SECONDS
                time.sleep(_BUSY_POLL_SECONDS if busy else _INPUT_IDLE_POLL_SECONDS)
                continue
            last_activity = now
            for (message, delta), stamp in zip(batch, self._timestamps(batch, now)):
                self._deliver(message, float(delta), stamp)

    def _timestamps(self, batch: list, now: float) -> list[float]:
        """Arrival times for messages read together: the last one arrived by `now`; earlier
        ones are placed back by rtmidi's deltas (measured when the bytes came in), so a burst
        picked up late keeps its spacing. Never before the previous batch's last message."""
        stamps = [now] * len(batch)
        for i in range(len(batch) - 2, -1, -1):
            stamps[i] = stamps[i + 1] - float(batch[i + 1][1])
        floor = self._last_stamp if self._last_stamp is not None else -float("inf")
        stamps = [max(stamp, floor, now - _MAX_STAMP_DRIFT_SECONDS) for stamp in stamps]
        for i in range(1, len(stamps)):
            stamps[i] = max(stamps[i], stamps[i - 1])
        self._last_stamp = stamps[-1]
        return stamps

    def _deliver(self, message: list[int], delta: float, stamp: float) -> None:
        if len(message) < 3:
            return
        status, channel = message[0] & 0xF0, message[0] & 0x0F
        if status == 0x90 and message[2] > 0:
            kind = "note_on"
        elif status in (0x80, 0x90):
            kind = "note_off"
        else:
            return
        event = MidiNoteEvent(kind, message[1], message[2], channel, stamp, delta)
        try:
            self._callback(event)
        except Exception as exc:  # a bug in the handler must not kill MIDI input
            if self.callback_error is None:
                self.callback_error = f"{type(exc).__name__}: {exc}"
                log.exception("error in MIDI input callback")

    def __repr__(self) -> str:
        return f"MidiIn({self.port_name!r}, api={self.api_name!r})"
