"""Transport toolbar and actions: Space play/stop, Enter back to start, L loop, M metronome,
follow mode, tempo and time signature of the sketch (undoable), position display."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QLabel,
    QSpinBox,
    QToolBar,
    QWidget,
)

from engine.music import MAX_BPM, MIN_BPM, MidiFileError
from studio.editor.document import SketchDocument
from studio.editor.timegrid import position_of
from studio.transport.controller import Transport

DENOMINATORS = [1, 2, 4, 8, 16, 32]


class TransportToolBar(QToolBar):
    editing_done = Signal()  # a field was committed: hand the keyboard back to the editor
    problem = Signal(str)  # an edit the clip refused, in one line for the status bar

    def __init__(self, transport: Transport, document: SketchDocument, parent: QWidget | None = None) -> None:
        super().__init__("Transport", parent)
        self.setObjectName("transportToolBar")
        self.transport, self.doc = transport, document
        self.act_rewind = self._action("|◀ Start", ["Return", "Enter", "Home"], transport.rewind,
                                       "Back to the start (or the loop start)")
        self.act_play = self._action("▶ Play", "Space", transport.toggle_play, "Play / stop")
        self.act_loop = self._action("⟲ Loop", "L", transport.set_loop_enabled, "Loop on/off", checkable=True)
        self.act_metronome = self._action("♩ Click", "M", transport.set_metronome, "Metronome on/off", checkable=True)
        self.act_follow = self._action("↦ Follow", "F", None, "Scroll the roll with the playhead", checkable=True)
        self.act_follow.setChecked(True)
        for act in (self.act_rewind, self.act_play, self.act_loop, self.act_metronome, self.act_follow):
            self.addAction(act)
        self.addSeparator()

        self.position_label = QLabel("  1.1.000   0:00.000", self)
        self.position_label.setObjectName("positionDisplay")
        self.position_label.setToolTip("Playhead: bar.beat.tick and time")
        self.addWidget(self.position_label)
        self.addSeparator()

        self.addWidget(QLabel(" Tempo ", self))
        self.tempo = QDoubleSpinBox(self)
        self.tempo.setRange(MIN_BPM, MAX_BPM)
        self.tempo.setDecimals(1)
        self.tempo.setSuffix(" BPM")
        self.tempo.setKeyboardTracking(False)
        self.tempo.setToolTip("Tempo of the sketch (undoable)")
        self.tempo.valueChanged.connect(self._commit_tempo)
        self.tempo.editingFinished.connect(self.editing_done)
        self.addWidget(self.tempo)
        self.addWidget(QLabel("  Time ", self))
        self.numerator = QSpinBox(self)
        self.numerator.setRange(1, 32)
        self.numerator.setKeyboardTracking(False)
        self.numerator.setToolTip("Beats per bar (undoable)")
        self.denominator = QComboBox(self)
        self.denominator.addItems([str(d) for d in DENOMINATORS])
        self.denominator.setToolTip("Beat unit (undoable)")
        self.numerator.valueChanged.connect(self._commit_time_signature)
        self.numerator.editingFinished.connect(self.editing_done)
        self.denominator.activated.connect(lambda _i: self._commit_time_signature())
        self.denominator.activated.connect(lambda _i: self.editing_done.emit())
        self.addWidget(self.numerator)
        self.addWidget(QLabel("/", self))
        self.addWidget(self.denominator)

        transport.state_changed.connect(self.sync)
        transport.position_changed.connect(self.show_position)
        document.clip_changed.connect(self.sync_clip_fields)
        self.sync()
        self.sync_clip_fields()

    def _action(self, text, keys, slot, tip, checkable=False) -> QAction:
        act = QAction(text, self)
        seqs = keys if isinstance(keys, list) else [keys]
        act.setShortcuts([QKeySequence(k) for k in seqs])
        act.setShortcutContext(Qt.WindowShortcut)
        act.setToolTip(f"{tip} ({seqs[0]})")
        act.setStatusTip(tip)
        act.setCheckable(checkable)
        if slot is not None:
            (act.toggled if checkable else act.triggered).connect(slot)
        return act

    def transport_actions(self) -> list[QAction]:
        return [self.act_play, self.act_rewind, self.act_loop, self.act_metronome, self.act_follow]

    # ------------------------------------------------------------------ sync from the model
    def sync(self) -> None:
        t = self.transport
        self.act_play.setText("■ Stop" if t.playing else "▶ Play")
        for act, value in ((self.act_loop, t.loop_enabled), (self.act_metronome, t.metronome)):
            if act.isChecked() != value:
                act.blockSignals(True)
                act.setChecked(value)
                act.blockSignals(False)

    def sync_clip_fields(self) -> None:
        clip = self.doc.clip
        for widget, setter, value in (
            (self.tempo, self.tempo.setValue, clip.bpm),
            (self.numerator, self.numerator.setValue, clip.time_signature.numerator),
        ):
            widget.blockSignals(True)
            setter(value)
            widget.blockSignals(False)
        den = clip.time_signature.denominator
        self.denominator.blockSignals(True)
        if str(den) not in [self.denominator.itemText(i) for i in range(self.denominator.count())]:
            self.denominator.addItem(str(den))
        self.denominator.setCurrentText(str(den))
        self.denominator.blockSignals(False)

    def show_position(self, tick: float) -> None:
        clip = self.doc.clip
        bar, beat, sub = position_of(clip, tick)
        seconds = clip.seconds_at(tick)
        minutes, sec = divmod(seconds, 60.0)
        self.position_label.setText(f"{bar:3d}.{beat}.{sub:03d}  {int(minutes)}:{sec:06.3f}")

    # ------------------------------------------------------------------ commits (undoable)
    def _commit_tempo(self, value: float) -> None:
        self.doc.set_tempo(value)

    def _commit_time_signature(self) -> None:
        try:
            self.doc.set_time_signature(self.numerator.value(), int(self.denominator.currentText()))
        except MidiFileError as exc:  # e.g. a /32 bar shorter than one tick at a coarse file resolution
            self.sync_clip_fields()
            self.setToolTip(str(exc))
            self.problem.emit(f"Time signature not changed: {exc}")
