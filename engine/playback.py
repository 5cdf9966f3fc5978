"""Real-time playback: TinySoundFont driven from a sounddevice output callback.

Design (why it looks like this):

* Everything audible is produced inside `Player._process(out)`, which runs in the audio
  callback. `Player.render_block(frames)` calls the same method on a plain buffer, so the
  scheduling logic is tested without a sound card.
* Note-ons/offs land on their exact sample: the synth is rendered in pieces between events
  (the notes and their samples are `engine.render.note_schedule`'s, as in an offline render),
  never quantised to blocks and never driven by UI timers.
* The UI thread never takes a lock the callback needs. What plays is an immutable
  `_Schedule` that `set_clip`/`set_loop` replace in one reference assignment; transport
  commands (play/stop/seek/audition) go through a `collections.deque` (atomic append and
  popleft in CPython) that the callback drains at the start of each block. The playhead is
  a float the callback publishes and the UI polls.
* MIDI out is produced from the same events: the callback stamps each message with the
  wall time its sample will reach the speakers and hands it to `MidiOut`'s sender thread
  (a deque again), which sends it at that time. rtmidi is never called from the callback.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from engine.errors import first_line
from engine.music import Clip, TempoMap
from engine.render import SoundFontError, load_synth, note_schedule

if TYPE_CHECKING:
    from engine.midi_io import MidiOut

# Never let a client library (PortAudio's JACK host API) spawn a JACK server as a side effect.
os.environ.setdefault("JACK_NO_START_SERVER", "1")

log = logging.getLogger(__name__)

__all__ = [
    "AudioUnavailable",
    "PlaybackError",
    "Player",
    "SoundFontError",
    "list_output_devices",
    "rescan_audio_devices",
]

PLAYBACK_CHANNEL = 0  # synth channel of the clip (piano selected by load_synth)
AUDITION_CHANNEL = 1  # keyboard / MIDI-thru notes: separate so they never cut clip notes
_CHANNELS = 2
_BYTES_PER_FRAME = _CHANNELS * 4  # interleaved stereo float32
MAX_BLOCK_FRAMES = 1 << 16
# Metronome click: short decaying sine bursts, accent higher and louder on bar starts.
_CLICK_SECONDS = 0.03
_CLICK_HZ, _ACCENT_HZ = 1000.0, 1600.0
_CLICK_GAIN, _ACCENT_GAIN = 0.25, 0.45
_COMMAND_QUEUE_LIMIT = 65536


class AudioUnavailable(RuntimeError):
    """Real-time audio output cannot be used (no PortAudio, no device, device refused)."""


class PlaybackError(ValueError):
    """A playback call was given invalid arguments or is not allowed in the current state."""


# ---------------------------------------------------------------------------- sounddevice
_sd_module = None
_open_streams = 0  # PortAudio must not be re-initialised while any stream is open


def _sounddevice():
    """The sounddevice module, or AudioUnavailable saying why it cannot be loaded."""
    global _sd_module
    if _sd_module is None:
        try:
            import sounddevice
        except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
            raise AudioUnavailable(f"PortAudio is not available: {first_line(exc)}") from None
        except ImportError as exc:
            raise AudioUnavailable(f"the sounddevice package is not available: {first_line(exc)}") from None
        _sd_module = sounddevice
    return _sd_module


def rescan_audio_devices() -> None:
    """Re-initialise PortAudio so devices that appeared since start-up (e.g. a JACK server
    started later) are listed. Refused while a Player has its stream open."""
    sd = _sounddevice()
    if _open_streams:
        raise PlaybackError("cannot rescan audio devices while a stream is open; close the player first")
    sd._terminate()
    sd._initialize()


def list_output_devices(rescan: bool = False) -> list[str]:
    """Output devices as "device name, host API" (each one a valid `Player(device=...)`).

    Raises AudioUnavailable when PortAudio is missing; an empty list means no device.
    """
    if rescan:
        rescan_audio_devices()
    sd = _sounddevice()
    hostapis = sd.query_hostapis()
    return [
        f"{info['name']}, {hostapis[info['hostapi']]['name']}"
        for info in sd.query_devices()
        if info["max_output_channels"] > 0
    ]


# ---------------------------------------------------------------------------- schedule
@dataclass(frozen=True, slots=True)
class _Schedule:
    """What the callback plays; immutable, replaced as a whole (never edited in place)."""

    sample_rate: int
    tempo: TempoMap  # built once per schedule: the audio callback converts with it
    on_samples: list  # sorted note-on samples
    pitches: list
    velocities: list  # 0..1 floats for TinySoundFont
    midi_velocities: list  # 1..127 ints for MIDI out
    off_samples: list
    end_tick: int
    # Beat grid: per time-signature segment (start tick, ticks per beat, ticks per bar).
    meter_ticks: list
    meter_beat: list
    meter_bar: list
    loop_start: int | None  # samples; None when looping is off
    loop_end: int | None
    loop_ticks: tuple[int, int] | None

    @classmethod
    def build(cls, clip: Clip, sample_rate: int, loop_ticks: tuple[int, int] | None,
              loop_enabled: bool) -> "_Schedule":
        tempo = clip.tempo_map()
        notes = note_schedule(clip)  # which notes sound, and how long: the renders' rule
        on_samples, off_samples = notes.samples(sample_rate)
        rows = sorted(zip(on_samples.tolist(), notes.pitches.tolist(), notes.velocities.tolist(),
                          off_samples.tolist()))
        meter = clip.time_signatures
        loop_start = loop_end = None
        if loop_enabled and loop_ticks is not None:
            loop_start = round(tempo.seconds_at(loop_ticks[0]) * sample_rate)
            loop_end = round(tempo.seconds_at(loop_ticks[1]) * sample_rate)
            if loop_end <= loop_start:  # shorter than a sample: nothing sensible to loop
                loop_start = loop_end = None
        return cls(
            sample_rate=sample_rate,
            tempo=tempo,
            on_samples=[r[0] for r in rows],
            pitches=[r[1] for r in rows],
            velocities=[r[2] / 127.0 for r in rows],
            midi_velocities=[r[2] for r in rows],
            off_samples=[r[3] for r in rows],
            end_tick=clip.end_tick,
            meter_ticks=[ts.tick for ts in meter],
            meter_beat=[max(ts.ticks_per_beat(clip.ppq), 1) for ts in meter],
            meter_bar=[max(ts.ticks_per_bar(clip.ppq), 1) for ts in meter],
            loop_start=loop_start,
            loop_end=loop_end,
            loop_ticks=loop_ticks,
        )

    def tick_to_sample(self, tick: float) -> int:
        return round(self.tempo.seconds_at(tick) * self.sample_rate)

    def sample_to_tick(self, sample: float) -> float:
        return self.tempo.tick_at(sample / self.sample_rate)

    def beat_at_or_after(self, tick: float) -> int:
        """First beat tick >= `tick`."""
        i = max(bisect.bisect_right(self.meter_ticks, tick) - 1, 0)
        start, beat = self.meter_ticks[i], self.meter_beat[i]
        candidate = start + math.ceil((tick - start) / beat) * beat if tick > start else start
        if i + 1 < len(self.meter_ticks) and candidate >= self.meter_ticks[i + 1]:
            return self.meter_ticks[i + 1]
        return candidate

    def is_bar_start(self, beat_tick: int) -> bool:
        i = max(bisect.bisect_right(self.meter_ticks, beat_tick) - 1, 0)
        return (beat_tick - self.meter_ticks[i]) % self.meter_bar[i] == 0

    def with_loop(self, loop_ticks: tuple[int, int] | None, enabled: bool) -> "_Schedule":
        loop_start = loop_end = None
        if enabled and loop_ticks is not None:
            loop_start = self.tick_to_sample(loop_ticks[0])
            loop_end = self.tick_to_sample(loop_ticks[1])
            if loop_end <= loop_start:
                loop_start = loop_end = None
        return _Schedule(
            self.sample_rate, self.tempo, self.on_samples, self.pitches, self.velocities,
            self.midi_velocities, self.off_samples, self.end_tick, self.meter_ticks,
            self.meter_beat, self.meter_bar, loop_start, loop_end, loop_ticks)


def _click(sample_rate: int, hz: float, gain: float) -> np.ndarray:
    t = np.arange(int(_CLICK_SECONDS * sample_rate)) / sample_rate
    return (gain * np.sin(2 * np.pi * hz * t) * np.exp(-t / (_CLICK_SECONDS / 5))).astype(np.float32)


# ---------------------------------------------------------------------------- player
class Player:
    """Plays a `Clip` in real time through TinySoundFont, with loop, metronome and MIDI out.

    Construction never touches the audio device (so it works headless); `open()` starts the
    stream. All public methods are safe to call from any thread while the stream runs.
    """

    def __init__(self, soundfont=None, sample_rate: int = 48000, latency: float | str = "low",
                 device=None, blocksize: int = 256):
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
                or not 8000 <= sample_rate <= 192000:
            raise PlaybackError(f"sample rate must be an integer in 8000-192000 Hz, got {sample_rate!r}")
        if isinstance(blocksize, bool) or not isinstance(blocksize, (int, np.integer)) \
                or not 0 <= blocksize <= MAX_BLOCK_FRAMES:
            raise PlaybackError(f"blocksize must be an integer in 0-{MAX_BLOCK_FRAMES} (0 = device's choice)")
        self.latency = _check_latency(latency)
        self.device = device
        self.blocksize = int(blocksize)
        self.sample_rate = int(sample_rate)
        self.unavailable_reason: str | None = None
        self.stop_at_end = False  # stop by itself after the last note (off: plays on, e.g. to record)
        self._soundfont = soundfont
        self._synth = self._prepare_synth(load_synth(soundfont, self.sample_rate))
        self._stream = None
        self._midi_out: MidiOut | None = None
        self._commands: deque = deque(maxlen=_COMMAND_QUEUE_LIMIT)
        self._command_generation = 0  # bumped per transport command; see _publish
        self._clip = Clip()
        self._loop_ticks: tuple[int, int] | None = None
        self._loop_enabled = False
        self._schedule = _Schedule.build(self._clip, self.sample_rate, None, False)
        self._metronome = False
        self._playing = False  # what the UI asked for (the callback follows via commands)
        self._published = (0.0, 0.0)  # (seconds, tick): one tuple, so readers see a consistent pair
        self._capture: np.ndarray | None = None
        self._capture_frames = 0
        self.xrun_count = 0
        self.callback_error: str | None = None
        self.peak_level = 0.0  # peak |sample| of the last block, for a level meter
        self._reset_callback_state()

    # ---------------------------------------------------------------- setup helpers
    @staticmethod
    def _prepare_synth(synth):
        font = synth.soundfonts[synth.channel.get(PLAYBACK_CHANNEL, 0)]
        # The audition channel gets the same preset as the playback channel.
        font.channel_set_preset_index(AUDITION_CHANNEL, font.channel_get_preset_index(PLAYBACK_CHANNEL))
        return synth

    def _reset_callback_state(self) -> None:
        """State owned by the audio thread (touched elsewhere only while no stream runs)."""
        self._cb_synth = self._synth
        self._cb_fonts = list(self._synth.soundfonts.values())
        self._cb_font = self._synth.soundfonts[self._synth.channel.get(PLAYBACK_CHANNEL, 0)]
        self._cb_schedule = self._schedule
        self._cb_midi: MidiOut | None = None
        self._cb_playing = False
        self._cb_generation_seen = self._command_generation
        self._pos = 0  # transport position in samples on the clip's timeline
        self._next_on = 0  # index into the schedule's note-ons
        self._active: dict[int, int] = {}  # pitch -> note-off sample of sounding clip notes
        self._loop_armed = False
        self._next_beat_tick = 0
        self._next_beat_sample = 0
        self._clicks: list[list] = []  # [waveform, samples already played]
        self._click = _click(self.sample_rate, _CLICK_HZ, _CLICK_GAIN)
        self._accent = _click(self.sample_rate, _ACCENT_HZ, _ACCENT_GAIN)
        self._last_midi_due = 0.0

    # ---------------------------------------------------------------- stream
    @property
    def is_open(self) -> bool:
        return self._stream is not None

    @property
    def output_latency(self) -> float | None:
        """The stream's actual output latency in seconds (None while closed)."""
        stream = self._stream
        return float(stream.latency) if stream is not None else None

    def open(self) -> None:
        """Start the audio stream. Raises AudioUnavailable with the reason (also kept in
        `unavailable_reason`); the player stays usable offline after a failure."""
        global _open_streams
        if self._stream is not None:
            return
        try:
            sd = _sounddevice()
            device = self._resolve_device(sd)
            rate = self._usable_sample_rate(sd, device)
            if rate != self.sample_rate:
                self._change_sample_rate(rate)
            # Keys auditioned while closed (their MIDI already went out directly) must not all
            # sound at once now; transport commands (play, seek...) still apply.
            pending = [c for c in self._commands if c[0] not in ("on", "off")]
            self._commands.clear()
            self._commands.extend(pending)
            stream = sd.OutputStream(
                samplerate=self.sample_rate, blocksize=self.blocksize, device=device,
                channels=_CHANNELS, dtype="float32", latency=self.latency, callback=self._callback)
            stream.start()
        except AudioUnavailable as exc:
            self.unavailable_reason = str(exc)
            raise
        except (sd.PortAudioError, ValueError, OSError) as exc:
            self.unavailable_reason = f"cannot open audio output: {first_line(exc)}"
            raise AudioUnavailable(self.unavailable_reason) from None
        self._stream = stream
        _open_streams += 1
        self.unavailable_reason = None

    def _resolve_device(self, sd):
        outputs = [i for i, d in enumerate(sd.query_devices()) if d["max_output_channels"] > 0]
        if not outputs:
            raise AudioUnavailable("no audio output device found")
        if self.device is None:
            default = sd.default.device[1]
            if default is None or default < 0:
                return outputs[0]  # PortAudio has devices but no default: take the first
            return default
        if isinstance(self.device, str) and self.device in list_output_devices():
            return outputs[list_output_devices().index(self.device)]
        try:
            return sd.query_devices(self.device, "output")["index"]
        except (ValueError, sd.PortAudioError) as exc:
            raise AudioUnavailable(f"audio output device {self.device!r} not usable: {first_line(exc)}") from None

    def _usable_sample_rate(self, sd, device) -> int:
        """Our rate if the device takes it, else the device's own (JACK only runs at the server's)."""
        try:
            sd.check_output_settings(device=device, channels=_CHANNELS, dtype="float32",
                                     samplerate=self.sample_rate)
            return self.sample_rate
        except sd.PortAudioError:
            native = int(sd.query_devices(device)["default_samplerate"])
            sd.check_output_settings(device=device, channels=_CHANNELS, dtype="float32", samplerate=native)
            log.info("device does not take %d Hz; playing at its %d Hz", self.sample_rate, native)
            return native

    def _change_sample_rate(self, rate: int) -> None:
        # Only while no stream runs: every sample position depends on the rate.
        tick = self.position_tick
        self.sample_rate = rate
        self._synth = self._prepare_synth(load_synth(self._soundfont, rate))
        self._schedule = _Schedule.build(self._clip, rate, self._loop_ticks, self._loop_enabled)
        self._reset_callback_state()
        self._pos = self._schedule.tick_to_sample(tick)

    def close(self) -> None:
        """Stop the stream (silencing MIDI out); the player can be opened again."""
        global _open_streams
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.stop()
            stream.close()
        except Exception as exc:  # a vanished device must not make closing fail
            log.warning("closing audio stream: %s", first_line(exc))
        _open_streams -= 1
        self._playing = False
        self._commands.clear()
        midi = self._cb_midi or self._midi_out
        if midi is not None:
            midi._request_all_notes_off()
        tick = self.position_tick
        self._reset_callback_state()
        self._pos = self._schedule.tick_to_sample(tick)

    def __enter__(self) -> "Player":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---------------------------------------------------------------- what plays
    def set_clip(self, clip: Clip) -> None:
        """Replace what plays; safe while playing (keeps the position in ticks)."""
        if not isinstance(clip, Clip):
            raise PlaybackError(f"set_clip expects a Clip, got {type(clip).__name__}")
        self._clip = clip
        self._schedule = _Schedule.build(clip, self.sample_rate, self._loop_ticks, self._loop_enabled)

    @property
    def clip(self) -> Clip:
        return self._clip

    def set_loop(self, start_tick: int | None, end_tick: int | None) -> None:
        """Loop [start_tick, end_tick) and enable looping; (None, None) disables it."""
        if start_tick is None and end_tick is None:
            self._loop_enabled = False
            self._loop_ticks = None
        else:
            if start_tick is None or end_tick is None:
                raise PlaybackError("set_loop needs both start and end ticks (or both None to disable)")
            start, end = _check_tick(start_tick, "loop start"), _check_tick(end_tick, "loop end")
            if end <= start:
                raise PlaybackError(f"loop end ({end}) must be after loop start ({start})")
            self._loop_ticks = (start, end)
            self._loop_enabled = True
        self._schedule = self._schedule.with_loop(self._loop_ticks, self._loop_enabled)

    @property
    def loop_enabled(self) -> bool:
        return self._loop_enabled

    @loop_enabled.setter
    def loop_enabled(self, on: bool) -> None:
        on = bool(on)
        if on and self._loop_ticks is None:
            raise PlaybackError("no loop region set: call set_loop(start_tick, end_tick) first")
        self._loop_enabled = on
        self._schedule = self._schedule.with_loop(self._loop_ticks, on)

    @property
    def loop_region(self) -> tuple[int, int] | None:
        return self._loop_ticks

    def set_metronome(self, on: bool) -> None:
        self._metronome = bool(on)

    @property
    def metronome(self) -> bool:
        return self._metronome

    def set_soundfont(self, path) -> None:
        """Load another SoundFont (raises engine.render.SoundFontError); swapped in at the next block."""
        synth = self._prepare_synth(load_synth(path, self.sample_rate))
        self._soundfont = path
        self._synth = synth
        if self._stream is None:
            self._adopt_synth()

    def set_midi_out(self, midi_out: "MidiOut | None") -> None:
        """Send the playback (and auditioned notes) to `midi_out` too; None stops MIDI out."""
        self._midi_out = midi_out
        if self._stream is None:
            self._adopt_midi_out()

    # ---------------------------------------------------------------- transport
    def play(self, from_tick: int | None = None) -> None:
        tick = None if from_tick is None else _check_tick(from_tick, "play position")
        self._command(("play", tick))
        self._playing = True
        if tick is not None:
            self._published = (self._schedule.tempo.seconds_at(tick), float(tick))

    def stop(self) -> None:
        """Stop; every sounding note gets a note-off (synth and MIDI out)."""
        self._command(("stop",))
        self._playing = False

    def panic(self) -> None:
        """Stop and cut every voice at once (no release tails); MIDI all-notes-off."""
        self._command(("panic",))
        self._playing = False

    def seek(self, tick: int) -> None:
        tick = _check_tick(tick, "seek position")
        self._command(("seek", tick))
        self._published = (self._schedule.tempo.seconds_at(tick), float(tick))

    def _command(self, command: tuple) -> None:
        # Transport commands carry a generation number (last element) so the callback can
        # tell whether it has applied the newest one before publishing a position.
        self._command_generation += 1
        self._commands.append(command + (self._command_generation,))

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def position_seconds(self) -> float:
        """Transport position in seconds on the clip's timeline, as of the last rendered block
        (the UI polls this for the playhead; it moves in steps of one block)."""
        return self._published[0]

    @property
    def position_tick(self) -> float:
        """Transport position in ticks (fractional), as of the last rendered block."""
        return self._published[1]

    # ---------------------------------------------------------------- audition
    def note_on(self, pitch: int, velocity: int = 100) -> None:
        """Sound a note now (piano keyboard, MIDI-in thru); also sent to MIDI out."""
        pitch, velocity = _check_pitch(pitch), _check_velocity(velocity)
        self._commands.append(("on", pitch, velocity, self._audition_midi_here(0x90, pitch, velocity)))

    def note_off(self, pitch: int) -> None:
        pitch = _check_pitch(pitch)
        self._commands.append(("off", pitch, 0, self._audition_midi_here(0x80, pitch, 0)))

    def _audition_midi_here(self, status: int, pitch: int, velocity: int) -> bool:
        """Without a running stream nobody drains the commands in real time, so MIDI out is
        sent from here; returns whether the callback should still send it (stream running)."""
        midi = self._midi_out
        if self._stream is None and midi is not None:
            midi._schedule(time.monotonic(), status, pitch, velocity)
            return False
        return True

    # ---------------------------------------------------------------- capture (tests, meters)
    def start_capture(self, seconds: float) -> None:
        """Record what the callback produces (up to `seconds`) for later inspection."""
        if not (isinstance(seconds, (int, float)) and 0 < seconds <= 600):
            raise PlaybackError("capture length must be between 0 and 600 seconds")
        self._capture_frames = 0
        self._capture = np.zeros((int(seconds * self.sample_rate), _CHANNELS), np.float32)

    def stop_capture(self) -> np.ndarray:
        """What was captured since start_capture (frames x 2 float32)."""
        buffer, self._capture = self._capture, None
        if buffer is None:
            raise PlaybackError("no capture running: call start_capture first")
        return buffer[: self._capture_frames].copy()

    # ---------------------------------------------------------------- rendering
    def render_block(self, frames: int) -> np.ndarray:
        """Run the audio callback's code on a fresh (frames x 2) float32 buffer, offline."""
        if self._stream is not None:
            raise PlaybackError("render_block is for offline use; close the audio stream first")
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) \
                or not 0 < frames <= MAX_BLOCK_FRAMES:
            raise PlaybackError(f"frames must be an integer in 1-{MAX_BLOCK_FRAMES}, got {frames!r}")
        out = np.zeros((int(frames), _CHANNELS), np.float32)
        self._process(out, None)
        return out

    def _callback(self, outdata, frames, time_info, status) -> None:
        if status.output_underflow:
            self.xrun_count += 1
        try:
            # How far ahead of "now" this block reaches the DAC (for MIDI out timing).
            delay = time_info.outputBufferDacTime - time_info.currentTime
            if not 0.0 <= delay < 1.0:  # some host APIs report zeros or garbage
                delay = float(self._stream.latency) if self._stream is not None else 0.0
            self._process(outdata, delay)
        except Exception as exc:  # never let an error kill the stream; report it instead
            outdata.fill(0)
            if self.callback_error is None:
                self.callback_error = f"{type(exc).__name__}: {exc}"
                log.exception("error in audio callback")

    def _process(self, out: np.ndarray, dac_delay: float | None) -> None:
        """Fill `out` (frames x 2 float32, C-contiguous). The whole audio path is here."""
        frames = out.shape[0]
        self._wall_base = time.monotonic() + (dac_delay or 0.0)
        if self._synth is not self._cb_synth:
            self._adopt_synth()
        if self._midi_out is not self._cb_midi:
            self._adopt_midi_out()
        if self._schedule is not self._cb_schedule:
            self._adopt_schedule(self._schedule)
        self._apply_commands()
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        schedule = self._cb_schedule
        done = 0
        new_clicks = []
        while done < frames:
            if not self._cb_playing:
                self._render(buffer, done, frames - done)
                break
            pos = self._pos
            self._fire_events(schedule, pos, done, new_clicks)
            pos = self._pos  # a loop wrap moves it
            nxt = pos + frames - done
            if self._next_on < len(schedule.on_samples):
                nxt = min(nxt, schedule.on_samples[self._next_on])
            if self._active:
                nxt = min(nxt, min(self._active.values()))
            nxt = min(nxt, self._next_beat_sample)
            if self._loop_armed:
                nxt = min(nxt, schedule.loop_end)
            count = nxt - pos
            if count <= 0:  # defensive: never spin; events at pos were all fired above
                count = 1
            self._render(buffer, done, count)
            done += count
            self._pos = pos + count
        self._mix_clicks(out, new_clicks)
        if self._cb_playing and self.stop_at_end and not self._loop_armed \
                and self._pos >= schedule.tick_to_sample(schedule.end_tick) and not self._active:
            self._stop_notes()
            self._cb_playing = False
            self._playing = False
        self._publish(out)

    def _render(self, buffer: memoryview, start: int, count: int) -> None:
        view = buffer[start * _BYTES_PER_FRAME: (start + count) * _BYTES_PER_FRAME]
        for index, font in enumerate(self._cb_fonts):
            font.render(view, index > 0)  # later fonts mix into the first one's output

    def _fire_events(self, schedule: _Schedule, pos: int, offset: int, new_clicks: list) -> None:
        """Everything due at sample `pos` (output frame `offset` of this block), in order:
        note-offs, a loop wrap, note-ons, the metronome."""
        if self._active:
            for pitch in [p for p, end in self._active.items() if end <= pos]:
                self._note_off(pitch, offset)
        if self._loop_armed and pos >= schedule.loop_end:
            self._stop_notes(offset)
            self._jump(schedule, schedule.loop_start)
            pos = self._pos
        on_samples = schedule.on_samples
        index = self._next_on
        while index < len(on_samples) and on_samples[index] <= pos:
            pitch = schedule.pitches[index]
            if pitch in self._active:  # a repeated pitch re-strikes
                self._note_off(pitch, offset)
            self._cb_font.channel_note_on(PLAYBACK_CHANNEL, pitch, schedule.velocities[index])
            self._active[pitch] = schedule.off_samples[index]
            self._midi(offset, 0x90, pitch, schedule.midi_velocities[index])
            index += 1
        self._next_on = index
        while self._next_beat_sample <= pos:
            if self._metronome and self._next_beat_sample == pos:
                new_clicks.append((offset, schedule.is_bar_start(self._next_beat_tick)))
            self._next_beat_tick = schedule.beat_at_or_after(self._next_beat_tick + 1)
            self._next_beat_sample = schedule.tick_to_sample(self._next_beat_tick)

    def _note_off(self, pitch: int, offset: int) -> None:
        self._cb_font.channel_note_off(PLAYBACK_CHANNEL, pitch)
        del self._active[pitch]
        self._midi(offset, 0x80, pitch, 0)

    def _stop_notes(self, offset: int = 0) -> None:
        for pitch in list(self._active):
            self._note_off(pitch, offset)

    def _jump(self, schedule: _Schedule, sample: int) -> None:
        """Move the transport to `sample` (no events fired yet at it)."""
        self._pos = sample
        self._next_on = bisect.bisect_left(schedule.on_samples, sample)
        self._loop_armed = schedule.loop_end is not None and sample < schedule.loop_end
        self._next_beat_tick = schedule.beat_at_or_after(max(schedule.sample_to_tick(sample) - 1, 0))
        self._next_beat_sample = schedule.tick_to_sample(self._next_beat_tick)
        while self._next_beat_sample < sample:
            self._next_beat_tick = schedule.beat_at_or_after(self._next_beat_tick + 1)
            self._next_beat_sample = schedule.tick_to_sample(self._next_beat_tick)

    def _midi(self, offset: int, status: int, pitch: int, velocity: int) -> None:
        midi = self._cb_midi
        if midi is None:
            return
        # Non-decreasing stamps keep MIDI order equal to audio order despite callback jitter.
        due = max(self._wall_base + offset / self.sample_rate, self._last_midi_due)
        self._last_midi_due = due
        midi._schedule(due, status, pitch, velocity)

    def _apply_commands(self) -> None:
        commands = self._commands
        schedule = self._cb_schedule
        while commands:
            try:
                command = commands.popleft()
            except IndexError:
                break
            kind = command[0]
            if kind == "on":
                self._cb_font.channel_note_on(AUDITION_CHANNEL, command[1], command[2] / 127.0)
                if command[3]:
                    self._midi(0, 0x90, command[1], command[2])
            elif kind == "off":
                self._cb_font.channel_note_off(AUDITION_CHANNEL, command[1])
                if command[3]:
                    self._midi(0, 0x80, command[1], 0)
            elif kind == "play":
                self._stop_notes()
                target = self._pos if command[1] is None else schedule.tick_to_sample(command[1])
                self._jump(schedule, target)
                self._cb_playing = True
            elif kind == "seek":
                self._stop_notes()
                self._jump(schedule, schedule.tick_to_sample(command[1]))
            elif kind in ("stop", "panic"):
                self._stop_notes()
                self._cb_playing = False
                # CC 123 = all notes off (release tails ring), CC 120 = all sound off (cut).
                controller = 120 if kind == "panic" else 123
                for font in self._cb_fonts:
                    for channel in (PLAYBACK_CHANNEL, AUDITION_CHANNEL):
                        font.channel_midi_control(channel, controller, 0)
                if kind == "panic":
                    self._clicks.clear()
                if self._cb_midi is not None:
                    self._cb_midi._request_all_notes_off()
            if len(command) > 1 and kind in ("play", "seek", "stop", "panic"):
                self._cb_generation_seen = max(self._cb_generation_seen, command[-1])

    def _adopt_schedule(self, schedule: _Schedule) -> None:
        """Switch to a new schedule at the same tick (the tempo map may have changed)."""
        old = self._cb_schedule
        tick = old.sample_to_tick(self._pos)
        for pitch, end in list(self._active.items()):
            self._active[pitch] = max(schedule.tick_to_sample(old.sample_to_tick(end)),
                                      schedule.tick_to_sample(tick))
        self._cb_schedule = schedule
        self._jump(schedule, schedule.tick_to_sample(tick))

    def _adopt_synth(self) -> None:
        self._stop_notes()  # note-offs for MIDI out; the old synth's voices go with it
        synth = self._synth
        self._cb_synth = synth
        self._cb_fonts = list(synth.soundfonts.values())
        self._cb_font = synth.soundfonts[synth.channel.get(PLAYBACK_CHANNEL, 0)]

    def _adopt_midi_out(self) -> None:
        old, self._cb_midi = self._cb_midi, self._midi_out
        if old is not None:
            old._request_all_notes_off()

    def _mix_clicks(self, out: np.ndarray, new_clicks: list) -> None:
        frames = out.shape[0]
        for offset, accent in new_clicks:
            self._clicks.append([self._accent if accent else self._click, -offset])
        remaining = []
        for click in self._clicks:
            wave, played = click
            start = max(-played, 0)  # frame in this block where this click resumes
            first = max(played, 0)
            n = min(len(wave) - first, frames - start)
            if n > 0:
                out[start:start + n] += wave[first:first + n, None]
            click[1] = first + n if n > 0 else first
            if click[1] < len(wave):
                remaining.append(click)
        self._clicks = remaining

    def _publish(self, out: np.ndarray) -> None:
        if self._capture is not None:
            capture = self._capture
            n = min(len(out), len(capture) - self._capture_frames)
            if n > 0:
                capture[self._capture_frames:self._capture_frames + n] = out[:n]
                self._capture_frames += n
        self.peak_level = float(np.abs(out).max()) if len(out) else 0.0
        # A transport command that arrived after this block started would be overwritten by
        # a stale position; skip publishing until the callback has applied it.
        if self._cb_generation_seen == self._command_generation:
            pos = self._pos
            schedule = self._cb_schedule
            if self._loop_armed and pos >= schedule.loop_end:  # wraps at the next block's start
                pos = schedule.loop_start + pos - schedule.loop_end
            self._published = (pos / self.sample_rate, schedule.sample_to_tick(pos))


def _check_latency(latency):
    if isinstance(latency, str):
        if latency not in ("low", "high"):
            raise PlaybackError(f"latency must be 'low', 'high' or seconds, got {latency!r}")
        return latency
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) \
            or not math.isfinite(latency) or not 0 < latency <= 2.0:
        raise PlaybackError(f"latency must be 'low', 'high' or 0-2 seconds, got {latency!r}")
    return float(latency)


def _check_tick(tick, what: str) -> int:
    if isinstance(tick, bool) or not isinstance(tick, (int, np.integer, float)) \
            or not math.isfinite(tick) or tick < 0:
        raise PlaybackError(f"{what} must be a tick >= 0, got {tick!r}")
    return int(tick)


def _check_pitch(pitch) -> int:
    if isinstance(pitch, bool) or not isinstance(pitch, (int, np.integer)) or not 0 <= pitch <= 127:
        raise PlaybackError(f"pitch must be an integer 0-127, got {pitch!r}")
    return int(pitch)


def _check_velocity(velocity) -> int:
    if isinstance(velocity, bool) or not isinstance(velocity, (int, np.integer)) or not 1 <= velocity <= 127:
        raise PlaybackError(f"velocity must be an integer 1-127, got {velocity!r}")
    return int(velocity)
