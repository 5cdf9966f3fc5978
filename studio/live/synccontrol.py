"""The transport toolbar's Sync control: internal / follow (input port) / send (output port), the measured
tempo and a lock light. It shows `LiveSync`'s state and changes its mode; it times nothing itself."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QActionGroup
from PySide6.QtWidgets import QHBoxLayout, QLabel, QMenu, QToolButton, QWidget

from studio.live.sync import FOLLOW, INTERNAL, SEND, LiveSync

VIRTUAL_LABEL = {FOLLOW: "SMART Studio's own input port (connect the DAW to it)",
                 SEND: "SMART Studio's own output port (connect it to the DAW)"}
LIGHT = {"off": "#5a5e66", "locked": "#58d068", "waiting": "#e0b040", "failed": "#e05050"}


class SyncControl(QWidget):
    def __init__(self, sync: LiveSync, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("syncControl")
        self.sync = sync
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 0, 4, 0)
        layout.setSpacing(4)
        self.button = QToolButton(self)
        self.button.setObjectName("syncButton")
        self.button.setPopupMode(QToolButton.InstantPopup)
        self.button.setToolButtonStyle(Qt.ToolButtonTextOnly)
        self.menu = QMenu(self.button)
        self.menu.aboutToShow.connect(self.rebuild_menu)
        self.menu.addAction("Checking MIDI ports…").setEnabled(False)
        self.button.setMenu(self.menu)
        self.light = QLabel("●", self)
        self.light.setObjectName("syncLight")
        self.tempo = QLabel("", self)
        self.tempo.setObjectName("syncTempo")
        self.tempo.setMinimumWidth(self.fontMetrics().horizontalAdvance("888.8 BPM "))
        layout.addWidget(self.button)
        layout.addWidget(self.light)
        layout.addWidget(self.tempo)
        sync.changed.connect(self.refresh)
        self.refresh()

    # ------------------------------------------------------------------ state
    def light_state(self) -> str:
        s = self.sync
        if s.error and s.io is None and s.mode == INTERNAL and s.saved_choice()[0] != INTERNAL:
            return "failed"
        if s.io is None or s.mode == INTERNAL:
            return "off"
        if s.locked() and s.tempo_mismatch() is None:
            return "locked"
        return "waiting"

    def refresh(self) -> None:
        s = self.sync
        port = s.port or ("own port" if s.mode != INTERNAL else "")
        short = port if len(port) <= 18 else port[:17] + "…"
        self.button.setText({INTERNAL: "Sync: Internal", FOLLOW: f"Follow: {short}", SEND: f"Send: {short}"}[s.mode])
        state = self.light_state()
        self.light.setStyleSheet(f"color: {LIGHT[state]}; font-size: 14px;")
        bpm = s.measured_bpm()
        self.tempo.setText(f"{bpm:.1f} BPM" if bpm is not None and s.mode != INTERNAL else "— BPM")
        lines = [f"Sync: {s.describe()}"]
        if s.mode == FOLLOW:
            lines.append("Locked: the DAW's clock is measured and running" if s.locked()
                         else "Unlocked: no clock ticks arriving (start the DAW's MIDI clock output)")
            mismatch = s.tempo_mismatch()
            if mismatch is not None:
                lines.append(f"The DAW's tempo differs from the sketch's by {mismatch:+.1f} BPM: the synth drifts "
                             "and is pulled back; Sync ▸ Use the DAW's Tempo fixes it")
        elif s.mode == SEND:
            lines.append("Running: our clock is sent" if s.locked() else "Stopped: Play starts our clock")
        if s.error:
            lines.append(f"Problem: {s.error}")
        tip = "\n".join(lines)
        for w in (self.button, self.light, self.tempo):
            w.setToolTip(tip)

    # ------------------------------------------------------------------ menu
    def rebuild_menu(self) -> None:
        m, s = self.menu, self.sync
        m.clear()
        group = QActionGroup(m)
        internal = m.addAction("Internal clock")
        internal.setCheckable(True)
        internal.setChecked(s.mode == INTERNAL)
        internal.triggered.connect(lambda _=False: s.set_mode(INTERNAL))
        group.addAction(internal)
        ports = s.ports()
        backend = f" ({ports['backend']})" if ports.get("backend") else ""
        for mode, title, key in ((FOLLOW, "&Follow the MIDI Clock From", "inputs"),
                                 (SEND, "&Send MIDI Clock To", "outputs")):
            sub = m.addMenu(title + backend)
            for label, port in [(VIRTUAL_LABEL[mode], None)] + [(p, p) for p in ports.get(key, [])]:
                act = sub.addAction(label)
                act.setCheckable(True)
                act.setChecked(s.mode == mode and s.port == port)
                act.triggered.connect(lambda _=False, md=mode, p=port: s.set_mode(md, p))
                group.addAction(act)
        if not ports.get("backend") and s.error:
            m.addAction(f"No live MIDI: {s.error}"[:120]).setEnabled(False)
        m.addSeparator()
        bpm = s.measured_bpm()
        use = m.addAction(f"Use the DAW's &Tempo ({bpm:.1f} BPM)" if bpm and s.mode == FOLLOW
                          else "Use the DAW's &Tempo")
        use.setEnabled(bool(bpm) and s.mode == FOLLOW)
        use.triggered.connect(lambda _=False: s.use_measured_tempo())
