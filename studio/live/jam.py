"""Jam in the studio: call and response with the model while the clock runs.

`JamController` runs `engine.live.jam.Jam` on a worker thread with the sync's LiveIO (follow: the DAW's
clock; send/internal: the studio's transport leads it) and a generator that asks the *host* over HTTP
(`hostgen`), so the studio never loads torch. The Jam anticipates: it asks for an answer `lead` seconds
before the answer's bar line (1.5 × the slowest generation so far) and schedules its notes on the beat grid
of the LiveIO (MIDI out). Each answer also lands in the sketch as a take — one undo step — so the synth
plays it and it stays in the song. The musician is heard on the LiveIO's input and on the studio's MIDI In.

`JamControl` is the compact toolbar: listen bars, answer bars, temperature, top-p, start/stop, last answer.
"""

from __future__ import annotations

import logging
import threading

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QDoubleSpinBox, QLabel, QSpinBox, QToolBar, QToolButton, QWidget

from engine.music import Note, dedupe_notes
from studio.live.hostgen import JamSampling, host_generator

log = logging.getLogger(__name__)

LISTEN_KEY, ANSWER_KEY, TEMPERATURE_KEY, TOP_P_KEY = ("live/jamListenBars", "live/jamAnswerBars",
                                                      "live/jamTemperature", "live/jamTopP")
KEY_LOCK_KEY, BEST_OF_KEY = "live/jamKeyLock", "live/jamBestOf"
MAX_BEST_OF = 8


class JamController(QObject):
    changed = Signal()  # running / waiting for the host / answers
    message = Signal(str)
    answer_landed = Signal(object)  # engine.live.jam.Answer, once it is in the sketch
    _answered = Signal(object, object)  # (jam, Answer) from the jam thread
    _failed = Signal(object, str)  # (jam, reason) from the jam thread
    _ended = Signal(object)  # (jam) the jam thread returned

    def __init__(self, sync, host, document, settings=None, recorder=None, parent: QObject | None = None,
                 generate_options=None, taste=None) -> None:
        """`generate_options()`: the Generate panel's options, whose key lock and pitch range a jam can keep;
        `taste`: the musician's taste store (studio.host.taste), which picks the best of N answers."""
        super().__init__(parent)
        self.sync, self.host, self.doc, self.settings = sync, host, document, settings
        self.generate_options, self.taste = generate_options, taste
        self.listen_bars, self.answer_bars = 2, 2
        self.sampling = JamSampling()
        self.key_lock = False  # answers keep to the Generate panel's key lock and pitch range
        self.best_of = 1  # N > 1: N answers sampled, the taste picks one (when a taste is fitted)
        self.jam = None
        self.waiting_for_host = False
        self.answers = 0
        self.last_answer = None
        self.last_error: str | None = None
        self._stopped: threading.Event | None = None
        self._cancel = lambda: None
        self._thread: threading.Thread | None = None
        self._answered.connect(self._on_answer, Qt.QueuedConnection)
        self._failed.connect(self._on_failed, Qt.QueuedConnection)
        self._ended.connect(self._on_ended, Qt.QueuedConnection)
        host.changed.connect(self._on_host_changed)
        if taste is not None and hasattr(taste, "changed"):
            taste.changed.connect(self.changed)  # a taste fitted: best of N becomes available
        closing = getattr(sync, "closing", None)
        if closing is not None:
            closing.connect(self._on_ports_closing)
        if recorder is not None and hasattr(recorder, "listeners"):
            recorder.listeners.append(self._studio_midi_in)
        self._load()

    # ------------------------------------------------------------------ settings
    def _load(self) -> None:
        s = self.settings
        if s is None:
            return
        try:
            self.listen_bars = max(1, min(16, int(s.value(LISTEN_KEY, 2))))
            self.answer_bars = max(1, min(16, int(s.value(ANSWER_KEY, 2))))
            self.sampling = JamSampling(max(0.0, min(2.0, float(s.value(TEMPERATURE_KEY, 1.0)))),
                                        max(0.05, min(1.0, float(s.value(TOP_P_KEY, 0.95)))))
            self.key_lock = str(s.value(KEY_LOCK_KEY, "false")).lower() in ("true", "1")
            self.best_of = max(1, min(MAX_BEST_OF, int(s.value(BEST_OF_KEY, 1))))
        except (TypeError, ValueError):
            pass

    def set_answer_choices(self, key_lock: bool | None = None, best_of: int | None = None) -> None:
        """Keep the Generate panel's key / range; best of N by taste. Both apply from the next answer."""
        if key_lock is not None:
            self.key_lock = bool(key_lock)
        if best_of is not None:
            self.best_of = max(1, min(MAX_BEST_OF, int(best_of)))
        if self.settings is not None:
            self.settings.setValue(KEY_LOCK_KEY, self.key_lock)
            self.settings.setValue(BEST_OF_KEY, self.best_of)
        self.changed.emit()

    @property
    def taste_ready(self) -> bool:
        return self.taste is not None and self.taste.ready

    def answer_sampling(self) -> JamSampling:
        """What the next answer is asked with (read on the jam thread before each request)."""
        allowed = None
        if self.key_lock and self.generate_options is not None:
            pitches = self.generate_options().allowed()
            allowed = tuple(pitches) if pitches is not None else None
        n = self.best_of if self.taste_ready else 1  # without a taste there is nothing to pick by
        s = self.sampling
        return JamSampling(s.temperature, s.top_p, s.seed, allowed, n)

    def _choose_by_taste(self, answers, prompt) -> int:
        """The answer the musician's taste scores highest (the first when it cannot score)."""
        scores = []
        for answer in answers:
            scored = self.taste.score(answer, prompt) if self.taste is not None and answer.notes else None
            scores.append(scored[0] if scored is not None else float("-inf"))
        return max(range(len(answers)), key=lambda i: scores[i])

    def set_options(self, listen_bars: int | None = None, answer_bars: int | None = None,
                    temperature: float | None = None, top_p: float | None = None) -> None:
        """Bars apply from the next start; temperature and top-p from the next answer."""
        if listen_bars is not None:
            self.listen_bars = int(listen_bars)
        if answer_bars is not None:
            self.answer_bars = int(answer_bars)
        t = self.sampling.temperature if temperature is None else float(temperature)
        p = self.sampling.top_p if top_p is None else float(top_p)
        self.sampling = JamSampling(t, p, self.sampling.seed)
        if self.settings is not None:
            for key, value in ((LISTEN_KEY, self.listen_bars), (ANSWER_KEY, self.answer_bars),
                               (TEMPERATURE_KEY, t), (TOP_P_KEY, p)):
                self.settings.setValue(key, value)

    # ------------------------------------------------------------------ start / stop
    @property
    def running(self) -> bool:
        return self.jam is not None

    def start(self) -> bool:
        from engine.live.jam import Jam, JamOptions

        if self.jam is not None:
            return True
        if not self.host.connected:
            self.waiting_for_host = True
            if not self.host.busy:
                self.host.connect_host()
            self.message.emit("Jam: waiting for the generation host to start…")
            self.changed.emit()
            return False
        self.waiting_for_host = False
        io = self.sync.ensure_io()
        if io is None:
            self.message.emit(f"Jam: no live MIDI ports ({self.sync.error})")
            self.changed.emit()
            return False
        clip = self.doc.clip
        sig = clip.time_signature_at(int(max(0, self.sync.transport.position)))
        try:
            options = JamOptions(self.listen_bars, self.answer_bars, (sig.numerator, sig.denominator),
                                 context_bars=max(8, self.listen_bars + self.answer_bars))
        except ValueError as exc:
            self.message.emit(f"Jam: {exc}")
            self.sync.release_io()
            return False
        stopped = threading.Event()
        made: dict = {}  # the jam, for the callbacks made before it
        generate = host_generator(lambda: self.host.client, self.answer_sampling, stopped,
                                  on_error=lambda reason: self._failed.emit(made.get("jam"), reason),
                                  choose=self._choose_by_taste)
        jam = Jam(io, generate, options, on_answer=lambda a: self._answered.emit(made["jam"], a),
                  bpm_fallback=float(clip.tempo_at(0)))
        made["jam"] = jam
        self.jam, self._stopped, self.answers, self.last_answer, self.last_error = jam, stopped, 0, None, None
        self._cancel = generate.cancel
        self._thread = threading.Thread(target=self._run, args=(jam,), name="studio-jam", daemon=True)
        self._thread.start()
        self.message.emit(self._start_text(options))
        self.changed.emit()
        return True

    def _start_text(self, options) -> str:
        from studio.live.sync import FOLLOW

        when = "when the DAW starts" if self.sync.mode == FOLLOW else "when you press Play"
        return (f"Jam: you play {options.listen_bars} bar{'s' if options.listen_bars != 1 else ''}, the model answers "
                f"{options.answer_bars}; phrases count from bar 1, {when}")

    def _run(self, jam) -> None:
        try:
            jam.warm_up()  # measures how early the first answer must be asked for
            jam.run()
        except Exception as exc:  # never into Qt: said in the status bar
            log.exception("jam failed")
            self._failed.emit(jam, f"{type(exc).__name__}: {exc}")
        finally:
            self._ended.emit(jam)

    def stop(self) -> None:
        self.waiting_for_host = False
        jam, self.jam = self.jam, None
        if jam is None:
            self.changed.emit()
            return
        self._stopped.set()
        jam.stop()
        self._cancel()  # a generation in flight ends now: the jam thread returns promptly
        if self.sync.io is not None:
            self.sync.io.all_notes_off()  # answers still queued on the grid are not played
        self.message.emit(f"Jam stopped after {self.answers} answer{'s' if self.answers != 1 else ''}")
        self.changed.emit()

    def shutdown(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    # ------------------------------------------------------------------ from the jam thread (queued)
    def _on_answer(self, jam, answer) -> None:
        if jam is not self.jam:
            return  # a jam stopped meanwhile
        self.answers += 1
        self.last_answer = answer
        ppq = self.doc.ppq
        new = [Note(max(0, round(beat * ppq)), pitch, max(1, round(duration * ppq)), max(1, min(127, velocity)))
               for beat, pitch, velocity, duration in answer.notes if 0 <= pitch <= 127]
        if new:
            clip = self.doc.clip
            bar = clip.bar_index_at(new[0].start) + 1
            merged = dedupe_notes(list(clip.notes) + new)
            kept = set(merged)
            self.doc.push_clip(f"Jam answer {answer.index} (bar {bar})", clip.with_notes(merged),
                               [n for n in new if n in kept])
        self.answer_landed.emit(answer)
        self.changed.emit()

    def _on_failed(self, jam, reason: str) -> None:
        if jam is not None and jam is not self.jam:
            return
        self.last_error = reason
        self.message.emit(f"Jam: {reason}")
        self.changed.emit()

    def _on_ended(self, jam) -> None:
        if jam is self.jam:  # it ended by itself (an error): the controls go back to Start
            self.jam = None
        if self.jam is None:
            self.sync.release_io()
        self.changed.emit()

    def _on_ports_closing(self) -> None:
        if self.jam is not None:
            self.shutdown()  # stopped and its thread ended before the ports it plays on close
            self.message.emit("Jam stopped: the Sync ports changed")

    def _on_host_changed(self) -> None:
        if self.waiting_for_host and self.host.connected:
            self.start()
        elif self.waiting_for_host and self.host.state == "failed":
            self.waiting_for_host = False
            self.message.emit(f"Jam: the generation host is unavailable ({self.host.error})")
            self.changed.emit()

    # ------------------------------------------------------------------ the studio's MIDI In
    def _studio_midi_in(self, event) -> None:
        """engine.midi_io.MidiIn's thread: the keyboard on the studio's MIDI In is heard by the jam too."""
        io = self.sync.io
        if self.jam is None or io is None:
            return
        from engine.live.scheduler import InputEvent

        status = 0x90 if event.kind == "note_on" else 0x80
        data = bytes((status, int(event.pitch) & 0x7F, int(event.velocity) & 0x7F if status == 0x90 else 0))
        t = io.now()
        io.input_events.put(InputEvent(t, io.beat_at(t), data))

    def describe(self) -> str:
        if self.waiting_for_host:
            return "waiting for the host…"
        if self.jam is None:
            return self.last_error or "stopped"
        a = self.last_answer
        if a is None:
            return "listening…"
        bars = self.jam.options.bar_beats
        bar = int(a.start_beat // bars) + 1
        early = a.ready_ms_before
        when = f"{early:.0f} ms early" if early == early and early >= 0 else "late"
        return f"answer {a.index} at bar {bar}, {len(a.notes)} notes, {when}"

    def short(self) -> str:
        """`describe` in a few characters, for the toolbar."""
        if self.waiting_for_host:
            return "starting host…"
        if self.jam is None:
            return "error" if self.last_error else ""
        a = self.last_answer
        if a is None:
            return "listening…"
        early = a.ready_ms_before
        return f"#{a.index} bar {int(a.start_beat // self.jam.options.bar_beats) + 1} " + (
            f"+{early:.0f} ms" if early == early and early >= 0 else "late")


class JamControl(QToolBar):
    """Listen bars, answer bars, temperature, top-p, start/stop and the last answer."""

    def __init__(self, controller: JamController, parent: QWidget | None = None) -> None:
        super().__init__("Jam", parent)
        self.setObjectName("jamToolBar")
        self.c = controller
        self.listen = self._spin(1, 16, controller.listen_bars, "Bars you play before each answer")
        self.listen.setPrefix("listen ")
        self.answer = self._spin(1, 16, controller.answer_bars, "Bars of each answer")
        self.answer.setPrefix("answer ")
        self.temperature = self._dspin(0.0, 2.0, 0.05, controller.sampling.temperature, "T ",
                                       "Sampling temperature of the answers (applies from the next answer)")
        self.top_p = self._dspin(0.05, 1.0, 0.01, controller.sampling.top_p, "top-p ",
                                 "Nucleus sampling of the answers (applies from the next answer)")
        self.key = QToolButton(self)
        self.key.setObjectName("jamKeyLock")
        self.key.setText("key")
        self.key.setCheckable(True)
        self.key.setChecked(controller.key_lock)
        self.key.setToolTip("Answers keep to the Generate panel's key lock and pitch range (from the next answer)")
        self.key.toggled.connect(lambda on: self.c.set_answer_choices(key_lock=on))
        self.addWidget(self.key)
        self.best = self._spin(1, MAX_BEST_OF, controller.best_of, "")
        self.best.setPrefix("best of ")
        self.best.valueChanged.connect(lambda n: self.c.set_answer_choices(best_of=n))
        self.button = QToolButton(self)
        self.button.setObjectName("jamButton")
        self.button.setCheckable(True)
        self.button.clicked.connect(self._toggle)
        self.addWidget(self.button)
        self.status = QLabel("", self)
        self.status.setObjectName("jamStatus")
        self.status.setMinimumWidth(self.fontMetrics().horizontalAdvance("#88 bar 888 +8888 ms"))
        self.addWidget(self.status)
        for w in (self.listen, self.answer):
            w.valueChanged.connect(self._bars_changed)
        for w in (self.temperature, self.top_p):
            w.valueChanged.connect(self._sampling_changed)
        controller.changed.connect(self.refresh)
        self.refresh()

    def _spin(self, low: int, high: int, value: int, tip: str) -> QSpinBox:
        w = QSpinBox(self)
        w.setRange(low, high)
        w.setValue(value)
        w.setToolTip(tip)
        w.setKeyboardTracking(False)
        self.addWidget(w)
        return w

    def _dspin(self, low: float, high: float, step: float, value: float, prefix: str, tip: str) -> QDoubleSpinBox:
        w = QDoubleSpinBox(self)
        w.setRange(low, high)
        w.setSingleStep(step)
        w.setDecimals(2)
        w.setValue(value)
        w.setPrefix(prefix)
        w.setToolTip(tip)
        w.setKeyboardTracking(False)
        self.addWidget(w)
        return w

    def _bars_changed(self, _value: int) -> None:
        self.c.set_options(listen_bars=self.listen.value(), answer_bars=self.answer.value())

    def _sampling_changed(self, _value: float) -> None:
        self.c.set_options(temperature=self.temperature.value(), top_p=self.top_p.value())

    def _toggle(self) -> None:
        if self.c.running or self.c.waiting_for_host:
            self.c.stop()
        else:
            self.c.start()

    def refresh(self) -> None:
        on = self.c.running or self.c.waiting_for_host
        self.button.setChecked(on)
        self.button.setText("■ Stop" if on else "● Jam")
        for w in (self.listen, self.answer):
            w.setEnabled(not on)  # the phrase grid is fixed while jamming
        self.best.setEnabled(self.c.taste_ready)
        self.best.setToolTip("Best of N: the host samples N answers and your taste picks one (from the next answer)"
                             if self.c.taste_ready else "Best of N by your taste: fit a taste first (Generate "
                             "panel, from 10 picks)")
        self.status.setText(self.c.short())
        tip = f"Jam: {self.c.describe()} (+ms: how long before its bar line the answer was ready)"
        self.status.setToolTip(tip)
        self.button.setToolTip("Start / stop jamming: the model answers what you play, on the bar line\n" + tip)
