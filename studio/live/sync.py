"""Sync: the studio's transport with a DAW's MIDI clock — internal, follow (a port's clock) or send (our clock).

The timing lives in `engine.live` (one `LiveIO`: a JACK process callback or a dedicated rtmidi thread):
it measures the DAW's clock, sends ours at exact times and plays scheduled notes. This object only
*reads* it on the UI thread (a 30 fps poll of its state and its queue of transport events) and moves the
studio's transport to match — it never times anything itself:

* follow: the DAW's Start/Continue play the transport from its position, Stop stops it, a Song Position
  Pointer while stopped moves the playhead; while running the playhead is pulled back to the DAW's beat
  when the two drift apart (the synth plays at the sketch's tempo; `tempo_mismatch` says when the DAW's
  differs, and `use_measured_tempo` adopts it, undoably);
* send: the transport leads — Play starts our clock (SPP + Start/Continue, then 24 ticks per beat at the
  sketch's tempo where play started), Stop stops it, a seek or a loop wrap relocates it (Stop, SPP,
  Continue), a seek while stopped sends the SPP.

Beats are quarter notes from Start; the sketch's tick of beat b is b × ppq. The choice (mode and port) is
kept in the studio's settings; a LiveIO is also opened on demand (`ensure_io`) for the jam in internal mode.
"""

from __future__ import annotations

import logging
import queue
import time

from PySide6.QtCore import QObject, QTimer, Signal

log = logging.getLogger(__name__)

INTERNAL, FOLLOW, SEND = "internal", "follow", "send"
MODES = (INTERNAL, FOLLOW, SEND)
MODE_KEY = "live/syncMode"
PORT_KEY = "live/syncPort"
API_KEY = "live/midiApi"
POLL_MS = 33
# The synth's playhead is pulled to the clock's beat only when it stays this far off for a while: the
# Player publishes the position of the block it rendered last (ahead of the speaker by its latency).
DRIFT_SECONDS = 0.12
DRIFT_POLLS = 8
CORRECTION_COOLDOWN_S = 2.0
TEMPO_MISMATCH_BPM = 0.5
LOCK_SLACK_S = 0.15  # at least two polls without a tick before the light goes out
LEAD_START_S = 0.02  # our clock starts this long after Play (the first tick must not fall in a past cycle)


def _engine_live():
    try:
        from engine.live import scheduler
    except Exception as exc:  # a broken install must not stop the editor from opening
        return None, f"live MIDI unavailable: {exc}"
    return scheduler, ""


class LiveSync(QObject):
    """Owns the studio's LiveIO (or none, in internal mode without a jam) and keeps the transport in step."""

    changed = Signal()  # mode, port, lock, tempo or running changed (the Sync control redraws)
    message = Signal(str)  # one line for the status bar
    closing = Signal()  # the LiveIO is about to close (its users let go of it now)

    def __init__(self, transport, document, settings=None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.transport, self.doc, self.settings = transport, document, settings
        self.mode = INTERNAL
        self.port: str | None = None
        self.api: str | None = None
        self.io = None
        self.error: str | None = None
        self.running = False  # the clock's transport (follow: the DAW's; send: ours)
        self._leading = False  # our clock runs (send mode, or internal with a jam's LiveIO)
        self._last_tick = 0.0
        self._off_polls = 0
        self._corrected_at = 0.0
        self._correcting = False
        self._state = None
        self._ticks_count, self._ticks_wall = 0, None  # the follower's ticks as the poll last saw them
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)
        transport.state_changed.connect(self._on_transport_state)
        located = getattr(transport, "located", None)
        if located is not None:
            located.connect(self._on_located)
        if settings is not None:
            self.api = str(settings.value(API_KEY, "") or "") or None

    # ------------------------------------------------------------------ settings
    def saved_choice(self) -> tuple[str, str | None]:
        if self.settings is None:
            return INTERNAL, None
        mode = str(self.settings.value(MODE_KEY, INTERNAL) or INTERNAL)
        port = str(self.settings.value(PORT_KEY, "") or "") or None
        return (mode if mode in MODES else INTERNAL), port

    def restore(self) -> bool:
        """Re-open the saved choice (the studio calls this once the window is up)."""
        mode, port = self.saved_choice()
        if mode == INTERNAL:
            return True
        return self.set_mode(mode, port, save=False)

    def _save(self) -> None:
        if self.settings is not None:
            self.settings.setValue(MODE_KEY, self.mode)
            self.settings.setValue(PORT_KEY, self.port or "")

    # ------------------------------------------------------------------ ports
    def ports(self) -> dict:
        """{"backend", "inputs", "outputs"} the live I/O can connect to (empty lists and `error` set if none)."""
        module, reason = _engine_live()
        if module is None:
            self.error = reason
            return {"backend": "", "inputs": [], "outputs": []}
        try:
            return module.live_ports(self.api)
        except module.LiveUnavailable as exc:
            self.error = str(exc)
            return {"backend": "", "inputs": [], "outputs": []}

    # ------------------------------------------------------------------ mode
    def set_mode(self, mode: str, port: str | None = None, save: bool = True) -> bool:
        """internal; follow `port` (None: an unconnected/virtual input); send to `port`. False (and `error`,
        a message) when the ports cannot be opened: the studio is then on its internal clock."""
        if mode not in MODES:
            raise ValueError(f"unknown sync mode {mode!r}")
        self._close_io()
        self.mode, self.port, self.error = mode, (port if mode != INTERNAL else None), None
        ok = True
        if mode != INTERNAL:
            ok = self._open_io()
        if save:
            self._save()
        if ok:
            self.message.emit(f"Sync: {self.describe()}")
        self.changed.emit()
        return ok

    def ensure_io(self):
        """The LiveIO a jam plays on: the sync's own, or (internal mode) one opened now whose clock the
        transport leads. None when it cannot be opened (`error` says why)."""
        if self.io is None and not self._open_io():
            self.changed.emit()
            return None
        self.changed.emit()
        return self.io

    def release_io(self) -> None:
        """The jam is done with the LiveIO: internal mode closes it again."""
        if self.mode == INTERNAL and self.io is not None:
            self._close_io()
            self.changed.emit()

    def _open_io(self) -> bool:
        module, reason = _engine_live()
        if module is None:
            return self._failed(reason)
        kwargs = {"clock": "follow" if self.mode == FOLLOW else "internal", "bpm": self._bpm_at(self.transport.position)}
        if self.mode == FOLLOW and self.port:
            kwargs["input_port"] = self.port
        if self.mode == SEND and self.port:
            kwargs["output_port"] = self.port
        try:
            self.io = module.open_live_io(self.api, **kwargs)
        except module.LiveUnavailable as exc:
            return self._failed(str(exc))
        except Exception as exc:  # a backend's own error type: never fatal to the studio
            return self._failed(f"{type(exc).__name__}: {exc}")
        self._ticks_count, self._ticks_wall = 0, None
        self.running = False
        if self.mode != INTERNAL:  # Sync on: the sketch's playback MIDI goes out on these ports, on time
            self.transport.set_live_out(module.LiveMidiOut(self.io))
        self._timer.start()
        if self.leads and self.transport.playing:
            self._lead_from(self.transport.position)
        return True

    def _failed(self, reason: str) -> bool:
        self.error = reason
        self.io = None
        self.message.emit(f"Sync {self.mode} unavailable: {reason}")
        log.info("live sync: %s", reason)
        if self.mode != INTERNAL:
            self.mode, self.port = INTERNAL, None
        return False

    def _close_io(self) -> None:
        self._timer.stop()
        if self.io is not None:
            self.closing.emit()  # a jam on these ports stops first
        io, self.io = self.io, None
        self.running = self._leading = False
        if io is None:
            return
        self.transport.set_live_out(None)
        try:
            io.all_notes_off()
            if self.mode != FOLLOW:
                io.stop_internal()
            time.sleep(0.05)  # a few cycles: the Stop and the note-offs leave before the ports close
            io.close()
        except Exception as exc:
            log.warning("closing the live MIDI ports: %s", exc)

    def shutdown(self) -> None:
        self._close_io()

    # ------------------------------------------------------------------ state for the UI
    @property
    def leads(self) -> bool:
        return self.io is not None and self.mode != FOLLOW

    def _io_in(self) -> str:
        return getattr(self.io, "input_name", None) or self.port or "?"

    def _io_out(self) -> str:
        return getattr(self.io, "output_name", None) or self.port or "?"

    def measured_bpm(self) -> float | None:
        """Follow: the DAW's tempo as measured; send: ours; None otherwise / before two ticks."""
        if self.io is None:
            return None
        return self.io.tempo

    def locked(self) -> bool:
        """Follow: a beat of ticks measured and ticks still arriving (seen by the poll within three tick
        lengths of wall time: the light does not depend on how a backend's frame clock is read); send: our
        clock runs."""
        io = self.io
        if io is None:
            return False
        if self.mode == FOLLOW:
            f = io.follower
            spt = f.seconds_per_tick
            return (spt is not None and f.ticks_received > f.window and self._ticks_wall is not None
                    and time.monotonic() - self._ticks_wall <= max(LOCK_SLACK_S, 3 * spt))
        return io.leader is not None

    def tempo_mismatch(self) -> float | None:
        """Follow: how far the DAW's tempo is from the sketch's (bpm), when more than TEMPO_MISMATCH_BPM."""
        bpm = self.measured_bpm() if self.mode == FOLLOW else None
        if bpm is None:
            return None
        diff = bpm - self._bpm_at(self.transport.position)
        return diff if abs(diff) > TEMPO_MISMATCH_BPM else None

    def use_measured_tempo(self) -> bool:
        """Set the sketch's tempo to the DAW's (undoable)."""
        bpm = self.measured_bpm()
        if bpm is None:
            return False
        self.doc.set_tempo(round(bpm, 1))
        self.message.emit(f"Sketch tempo set to the DAW's: {bpm:.1f} BPM (Ctrl+Z undoes)")
        return True

    def beat_now(self) -> float | None:
        """Follow: the beat of the DAW's last tick (within a tick of now); lead: our clock's beat now."""
        io = self.io
        if io is None:
            return None
        if self.mode == FOLLOW:
            return io.follower.position_beats if io.follower.running else None
        return io.beat_at(io.now())

    def describe(self) -> str:
        if self.mode == INTERNAL:
            return "internal clock" + (" (jam ports open)" if self.io is not None else "")
        if self.mode == FOLLOW:
            return (f"following the MIDI clock from {self.port}" if self.port
                    else f"following the MIDI clock sent to {self._io_in()}")
        return f"sending MIDI clock to {self.port}" if self.port else f"sending MIDI clock from {self._io_out()}"

    def _bpm_at(self, tick: float) -> float:
        clip = self.doc.clip
        return float(clip.tempo_at(int(max(0, tick))))

    # ------------------------------------------------------------------ the poll (UI thread; reads only)
    def poll(self) -> None:
        io = self.io
        if io is None:
            return
        while True:
            try:
                event = io.transport_events.get_nowait()
            except queue.Empty:
                break
            if self.mode == FOLLOW:
                self._follow_event(event)
            else:
                self.running = event.kind == "start"
        if self.mode == FOLLOW:
            if io.follower.ticks_received != self._ticks_count:
                self._ticks_count, self._ticks_wall = io.follower.ticks_received, time.monotonic()
            self._follow_drift()
        elif self._leading:
            self._lead_drift()
        state = (self.mode, self.running, self.locked(), None if self.measured_bpm() is None
                 else round(self.measured_bpm(), 1), self.error)
        if state != self._state:
            self._state = state
            self.changed.emit()

    def _tick_of(self, beat: float) -> float:
        return max(0.0, beat * self.doc.ppq)

    def _follow_event(self, event) -> None:
        tr = self.transport
        self._correcting = True
        try:
            if event.kind == "start":
                self.running = True
                # Where the DAW's transport is now (events wait for the poll: up to a frame late).
                beat = self.beat_now()
                tr.play(self._tick_of(event.beat if beat is None else beat))
                self._off_polls = 0
            elif event.kind == "stop":
                self.running = False
                if tr.playing:
                    tr.stop()
            elif event.kind == "locate" and not tr.playing:
                tr.seek(self._tick_of(event.beat))
        finally:
            self._correcting = False

    def _follow_drift(self) -> None:
        tr = self.transport
        if not (self.running and tr.playing):
            return
        beat = self.beat_now()
        if beat is not None:
            self._pull(self._tick_of(beat))

    def _pull(self, tick: float) -> None:
        """Move the transport to `tick` when it has stayed more than DRIFT_SECONDS off it for a while."""
        tr = self.transport
        off = abs(tr.position - tick) / self.doc.ppq * 60.0 / self._bpm_at(tick)
        self._off_polls = self._off_polls + 1 if off > DRIFT_SECONDS else 0
        now = time.monotonic()
        if self._off_polls >= DRIFT_POLLS and now - self._corrected_at > CORRECTION_COOLDOWN_S:
            self._off_polls, self._corrected_at = 0, now
            self._correcting = True
            try:
                tr.seek(tick)
            finally:
                self._correcting = False
            # Our own correction, not a loop wrap: leading, a jump back here must not restart the DAW.
            self._last_tick = tick

    # ------------------------------------------------------------------ leading (send; internal + jam)
    def _lead_from(self, tick: float) -> None:
        io = self.io
        if io is None:
            return
        if self._leading:
            io.stop_internal()
        io.bpm = self._bpm_at(tick)
        io.start_internal(io.now() + LEAD_START_S, tick / self.doc.ppq)
        self._leading = True
        self.running = True
        self._last_tick = tick

    def _on_transport_state(self) -> None:
        if not self.leads or self._correcting:
            return
        tr = self.transport
        if tr.playing and not self._leading:
            self._lead_from(tr.position)
        elif not tr.playing and self._leading:
            self.io.stop_internal()
            self._leading = self.running = False
            self.changed.emit()

    def _on_located(self, tick: float) -> None:
        """A seek by the musician: a leading clock relocates (running) or sends the position (stopped)."""
        if not self.leads or self._correcting:
            return
        if self._leading:
            self._lead_from(tick)
        else:
            self.io.locate(tick / self.doc.ppq)

    def _lead_drift(self) -> None:
        tr, io = self.transport, self.io
        if not tr.playing:
            return
        tick = tr.position
        if tick < self._last_tick - self.doc.ppq / 4:  # the loop wrapped: the DAW goes back with us
            self._lead_from(tick)
            return
        self._last_tick = tick
        beat = self.beat_now()
        if beat is not None and io.leader is not None:
            self._pull(self._tick_of(beat))  # the synth keeps to the clock the DAW hears
