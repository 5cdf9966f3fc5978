"""Transport: wraps engine.playback.Player for the UI (play/stop/seek/loop/metronome/audition).

The audio callback publishes the playhead; a ~30 fps QTimer polls it. Without an audio
device (or without PortAudio) the transport keeps working on a silent clock, so the playhead
still moves, MIDI-in recording still works, and `audio_status` says why there is no sound.
"""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import QObject, QTimer, Signal

from engine.music import Clip
from studio.editor.document import SketchDocument

log = logging.getLogger(__name__)

POLL_MS = 33
LATENCY_CHOICES: list[tuple[str, str | float]] = [
    ("Low (device default)", "low"),
    ("High (safe)", "high"),
    ("5 ms", 0.005),
    ("10 ms", 0.010),
    ("20 ms", 0.020),
    ("50 ms", 0.050),
    ("100 ms", 0.100),
]


def _playback_module():
    """engine.playback, or None with the reason (it needs numpy/tinysoundfont; PortAudio optional)."""
    try:
        from engine import playback
    except Exception as exc:  # a broken install must not stop the editor from opening
        return None, f"playback engine unavailable: {exc}"
    return playback, ""


class SilentClock:
    """Stands in for the audio callback's playhead when there is no audio: wall-clock time."""

    def __init__(self) -> None:
        self.playing = False
        self._t0 = 0.0
        self._from_seconds = 0.0

    def start(self, clip: Clip, tick: float) -> None:
        self.playing = True
        self._t0 = time.monotonic()
        self._from_seconds = clip.seconds_at(tick)

    def stop(self) -> None:
        self.playing = False

    def position(self, clip: Clip, loop: tuple[int, int] | None) -> float:
        tick = float(clip.tick_at(self._from_seconds + time.monotonic() - self._t0))
        if loop is not None:
            start, end = loop
            if tick >= end and clip.seconds_at(start) <= self._from_seconds + 1e-9 < clip.seconds_at(end):
                # Wrap inside the loop (the tempo map is applied within the loop too).
                span = clip.seconds_at(end) - clip.seconds_at(start)
                elapsed = self._from_seconds + time.monotonic() - self._t0 - clip.seconds_at(start)
                tick = float(clip.tick_at(clip.seconds_at(start) + elapsed % span))
        return tick


class Transport(QObject):
    position_changed = Signal(float)  # ticks
    state_changed = Signal()  # playing / loop / metronome / audio availability
    audio_status = Signal(str)
    located = Signal(float)  # the musician moved the playhead (seek / rewind), ticks

    def __init__(self, document: SketchDocument, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.doc = document
        self.player = None
        self._menu_midi_out = None  # the MIDI menu's output (playback and audition)
        self._live_midi_out = None  # the live ports' output while Sync is on (preferred)
        self.audio_reason = "audio not started"
        self.soundfont: str | None = None  # None = the shipped piano
        self.latency: str | float = "low"
        self.device: str | None = None
        self.loop: tuple[int, int] | None = None
        self.loop_enabled = False
        self.metronome = False
        self._clock = SilentClock()
        self._position = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        document.clip_changed.connect(self._on_clip_changed)

    # ------------------------------------------------------------------ audio device
    @property
    def has_audio(self) -> bool:
        return self.player is not None and self.player.is_open

    def start_audio(self) -> bool:
        """(Re)create the Player with the current soundfont/latency/device and open the stream."""
        self.stop_audio()
        playback, reason = _playback_module()
        if playback is None:
            return self._no_audio(reason)
        try:
            player = playback.Player(soundfont=self.soundfont, latency=self.latency, device=self.device)
        except Exception as exc:  # SoundFontError, PlaybackError: the reason is in the message
            return self._no_audio(f"cannot start the synth: {exc}")
        player.set_clip(self.doc.clip)
        self._apply_loop(player)
        player.set_metronome(self.metronome)
        self.player = player
        try:
            player.open()
        except playback.AudioUnavailable as exc:
            # Keep the closed player: it still drives MIDI out for auditioned notes.
            return self._no_audio(str(exc))
        except Exception as exc:
            return self._no_audio(f"cannot open audio output: {exc}")
        self.audio_reason = ""
        self.audio_status.emit("Audio: " + (self.device or "default output"))
        self.state_changed.emit()
        return True

    def _no_audio(self, reason: str) -> bool:
        self.audio_reason = reason
        log.info("no audio: %s", reason)
        self.audio_status.emit(f"No sound: {reason}. Editing still works.")
        self.state_changed.emit()
        return False

    def stop_audio(self) -> None:
        if self.player is not None:
            try:
                self.player.close()
            except Exception as exc:
                log.warning("closing the player: %s", exc)
        self.player = None

    def set_soundfont(self, path: str | None) -> None:
        """Switch the synth's SoundFont; raises engine.render.SoundFontError for a bad file."""
        if self.player is not None:
            if path is None:
                from engine.render import DEFAULT_SOUNDFONT

                self.player.set_soundfont(DEFAULT_SOUNDFONT)
            else:
                self.player.set_soundfont(path)
        else:
            from engine.render import load_synth

            load_synth(path)  # validate even without audio so a bad file is reported now
        self.soundfont = path

    def set_latency(self, latency: str | float) -> None:
        self.latency = latency
        if self.player is not None:
            self.start_audio()

    def set_device(self, device: str | None) -> None:
        self.device = device
        if self.player is not None:
            self.start_audio()

    # ------------------------------------------------------------------ transport
    @property
    def playing(self) -> bool:
        if self.has_audio:
            return self.player.playing
        return self._clock.playing

    @property
    def position(self) -> float:
        return self._position

    def play(self, from_tick: float | None = None) -> None:
        tick = self._position if from_tick is None else max(0.0, from_tick)
        if self.loop_enabled and self.loop and not (self.loop[0] <= tick < self.loop[1]):
            tick = float(self.loop[0])  # as in DAWs: with looping on, play starts inside the loop
        self._position = tick
        if self.has_audio:
            self.player.play(int(tick))
        else:
            self._clock.start(self.doc.clip, tick)
        self._timer.start()
        self.state_changed.emit()
        self.position_changed.emit(tick)

    def stop(self) -> None:
        if self.has_audio:
            self.player.stop()
            self._position = float(self.player.position_tick)
        elif self._clock.playing:
            self._position = self._clock.position(self.doc.clip, self._loop_if_on())
            self._clock.stop()
        self._timer.stop()
        self.state_changed.emit()
        self.position_changed.emit(self._position)

    def toggle_play(self) -> None:
        if self.playing:
            self.stop()
        else:
            self.play()

    def seek(self, tick: float) -> None:
        tick = max(0.0, float(tick))
        self._position = tick
        if self.has_audio:
            self.player.seek(int(tick))
        elif self._clock.playing:
            self._clock.start(self.doc.clip, tick)
        self.position_changed.emit(tick)
        self.located.emit(tick)

    def rewind(self) -> None:
        self.seek(self.loop[0] if self.loop_enabled and self.loop else 0)

    # ------------------------------------------------------------------ loop / metronome
    def _loop_if_on(self) -> tuple[int, int] | None:
        return self.loop if self.loop_enabled else None

    def set_loop(self, start: int | None, end: int | None, enabled: bool | None = None) -> None:
        if start is None or end is None or end <= start:
            self.loop, self.loop_enabled = None, False
        else:
            self.loop = (int(start), int(end))
            self.loop_enabled = True if enabled is None else enabled
        if self.player is not None:
            self._apply_loop(self.player)
        if self._clock.playing:
            self._clock.start(self.doc.clip, self._position)
        self.state_changed.emit()

    def set_loop_enabled(self, on: bool) -> None:
        if on and self.loop is None:
            # Loop with no region yet: the bar under the playhead up to 4 bars later.
            clip = self.doc.clip
            bar = clip.bar_index_at(int(self._position))
            self.loop = (clip.bar_tick(bar), clip.bar_tick(bar + 4))
        self.loop_enabled = bool(on) and self.loop is not None
        if self.player is not None:
            self._apply_loop(self.player)
        self.state_changed.emit()

    def _apply_loop(self, player) -> None:
        if self.loop is None:
            player.set_loop(None, None)
        else:
            player.set_loop(*self.loop)
            player.loop_enabled = self.loop_enabled

    def set_metronome(self, on: bool) -> None:
        self.metronome = bool(on)
        if self.player is not None:
            self.player.set_metronome(self.metronome)
        self.state_changed.emit()

    # ------------------------------------------------------------------ audition
    def note_on(self, pitch: int, velocity: int = 100) -> None:
        if self.player is not None:
            self.player.note_on(pitch, velocity)

    def note_off(self, pitch: int) -> None:
        if self.player is not None:
            self.player.note_off(pitch)

    def set_midi_out(self, midi_out) -> None:
        """The MIDI menu's output for playback and audition (None: off)."""
        self._menu_midi_out = midi_out
        self._route_midi()

    def set_live_out(self, live_out) -> None:
        """While Sync is on, playback MIDI leaves through the live ports' scheduler (`engine.live.scheduler.
        LiveMidiOut`: JACK frame-exact) instead of the MIDI menu's output, so a DAW gets one copy, on time;
        None gives it back to the menu's output."""
        self._live_midi_out = live_out
        self._route_midi()

    @property
    def midi_route(self):
        """What the player sends MIDI to now: the live ports' output, the MIDI menu's, or None."""
        return self._live_midi_out or self._menu_midi_out

    def _route_midi(self) -> None:
        if self.player is not None:
            self.player.set_midi_out(self.midi_route)

    # ------------------------------------------------------------------ internals
    def _on_clip_changed(self) -> None:
        if self.player is not None:
            self.player.set_clip(self.doc.clip)

    def _poll(self) -> None:
        if self.has_audio:
            tick = float(self.player.position_tick)
            if not self.player.playing:
                self._timer.stop()
                self.state_changed.emit()
        elif self._clock.playing:
            tick = self._clock.position(self.doc.clip, self._loop_if_on())
        else:
            self._timer.stop()
            return
        self._position = tick
        self.position_changed.emit(tick)

    def shutdown(self) -> None:
        self._timer.stop()
        self._clock.stop()
        self.stop_audio()
