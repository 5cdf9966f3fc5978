"""The MIDI menu: live MIDI out (virtual "SMART Studio" port or a chosen port, channel),
MIDI in (recording into the roll at the playhead while playing, quantize, thru to the synth).

The backend is probed the first time the menu opens (probing starts ALSA/JACK clients, which
is slow and noisy, so not at start-up). Without a backend the menu shows one disabled entry
with the reason, and nothing else in the studio depends on MIDI.
"""

from __future__ import annotations

import logging
import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu, QWidget

from studio.editor import operations as ops
from studio.editor.document import SketchDocument
from studio.midi.recorder import MidiRecorder
from studio.transport.controller import Transport

log = logging.getLogger(__name__)

VIRTUAL = object()  # marker for "the virtual SMART Studio port"
# rtmidi cannot make virtual ports on Windows (WinMM): a loopback driver provides the ports instead.
WINDOWS_VIRTUAL_HINT = (" — Windows has no virtual MIDI ports: create a pair with loopMIDI or Windows MIDI "
                        "Services and choose it here")


def _virtual_hint(target) -> str:
    return WINDOWS_VIRTUAL_HINT if target is VIRTUAL and sys.platform == "win32" else ""


def _midi_io():
    try:
        from engine import midi_io
    except Exception as exc:
        return None, f"MIDI support not installed: {exc}"
    return midi_io, ""


class MidiController(QObject):
    """Owns the MidiOut/MidiIn objects and the recorder."""

    message = Signal(str)

    def __init__(self, document: SketchDocument, transport: Transport, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.transport = transport
        self.recorder = MidiRecorder(document, transport, self)
        self.midi_out = None
        self.midi_in = None
        self.out_target = None  # None (off), VIRTUAL, or a port name
        self.in_port: str | None = None
        self.channel = 0
        self._status: tuple[bool, str] | None = None

    def backend_status(self, refresh: bool = False) -> tuple[bool, str]:
        if self._status is None or refresh:
            module, reason = _midi_io()
            self._status = (False, reason) if module is None else module.midi_backend_status()
        return self._status

    def ports(self) -> dict:
        module, _reason = _midi_io()
        if module is None:
            return {"inputs": [], "outputs": []}
        try:
            return module.list_midi_ports()
        except module.MidiUnavailable as exc:
            self.message.emit(str(exc))
            return {"inputs": [], "outputs": []}

    def set_output(self, target) -> bool:
        """target: None (off), VIRTUAL, or an output port name."""
        if self.midi_out is not None:
            self.transport.set_midi_out(None)
            self.midi_out.close()
            self.midi_out = None
        self.out_target = None
        if target is None:
            self.message.emit("MIDI out off")
            return True
        module, reason = _midi_io()
        if module is None:
            self.message.emit(reason)
            return False
        try:
            out = module.MidiOut(None if target is VIRTUAL else target, channel=self.channel)
        except module.MidiUnavailable as exc:
            self.message.emit(f"MIDI out: {exc}{_virtual_hint(target)}")
            return False
        self.midi_out, self.out_target = out, target
        self.transport.set_midi_out(out)
        self.message.emit(f"MIDI out → {out.port_name}, channel {self.channel + 1}")
        return True

    def set_channel(self, channel: int) -> None:
        self.channel = channel
        if self.midi_out is not None:
            self.midi_out.all_notes_off()
            self.midi_out.channel = channel
        self.message.emit(f"MIDI out channel {channel + 1}")

    def set_input(self, port: str | None) -> bool:
        if self.midi_in is not None:
            self.midi_in.close()
            self.midi_in = None
        self.in_port = None
        if port is None:
            self.message.emit("MIDI in off")
            return True
        module, reason = _midi_io()
        if module is None:
            self.message.emit(reason)
            return False
        try:
            self.midi_in = module.MidiIn(None if port is VIRTUAL else port, self.recorder.midi_callback)
        except module.MidiUnavailable as exc:
            self.message.emit(f"MIDI in: {exc}{_virtual_hint(port)}")
            return False
        self.in_port = port
        self.message.emit(f"MIDI in ← {self.midi_in.port_name}")
        return True

    def shutdown(self) -> None:
        for obj in (self.midi_in, self.midi_out):
            if obj is not None:
                try:
                    obj.close()
                except Exception as exc:
                    log.warning("closing MIDI port: %s", exc)
        self.midi_in = self.midi_out = None


class MidiMenu(QMenu):
    def __init__(self, controller: MidiController, parent: QWidget | None = None) -> None:
        super().__init__("&MIDI", parent)
        self.controller = controller
        self.aboutToShow.connect(self.rebuild)
        # Until probed, one informative entry (so the menu is never empty).
        self.addAction("Checking MIDI…").setEnabled(False)

    def rebuild(self) -> None:
        self.clear()
        ok, reason = self.controller.backend_status()
        if not ok:
            act = self.addAction(f"MIDI unavailable: {reason}")
            act.setEnabled(False)
            self.addSeparator()
            self.addAction("Check Again", lambda: self.controller.backend_status(refresh=True))
            return
        c = self.controller
        ports = c.ports()
        out_menu = self.addMenu("MIDI &Output")
        group = QActionGroup(out_menu)
        for label, target in [("Off", None), ('Virtual Port "SMART Studio"', VIRTUAL)] + [
            (name, name) for name in ports.get("outputs", [])
        ]:
            act = out_menu.addAction(label)
            act.setCheckable(True)
            act.setChecked(c.out_target is target or (isinstance(target, str) and c.out_target == target))
            act.triggered.connect(lambda _=False, t=target: c.set_output(t))
            group.addAction(act)
        ch_menu = self.addMenu("Output &Channel")
        ch_group = QActionGroup(ch_menu)
        for ch in range(16):
            act = ch_menu.addAction(f"Channel {ch + 1}")
            act.setCheckable(True)
            act.setChecked(ch == c.channel)
            act.triggered.connect(lambda _=False, k=ch: c.set_channel(k))
            ch_group.addAction(act)
        in_menu = self.addMenu("MIDI &Input")
        in_group = QActionGroup(in_menu)
        for label, port in [("Off", None), ('Virtual Port "SMART Studio In"', VIRTUAL)] + [
            (name, name) for name in ports.get("inputs", [])
        ]:
            act = in_menu.addAction(label)
            act.setCheckable(True)
            act.setChecked(c.in_port is port or (isinstance(port, str) and c.in_port == port))
            act.triggered.connect(lambda _=False, p=port: c.set_input(p))
            in_group.addAction(act)
        self.addSeparator()
        rec = c.recorder
        self._toggle("&Record MIDI In While Playing", rec.record_enabled, lambda on: setattr(rec, "record_enabled", on))
        self._toggle("MIDI &Thru to Synth", rec.thru, lambda on: setattr(rec, "thru", on))
        q_menu = self.addMenu("&Quantize Recording")
        q_group = QActionGroup(q_menu)
        for label, _q in [("Off", None)] + [(lbl, q) for lbl, q in ops.SNAP_CHOICES if q is not None]:
            act = q_menu.addAction(label)
            act.setCheckable(True)
            value = None if label == "Off" else label
            act.setChecked(rec.quantize_label == value)
            act.triggered.connect(lambda _=False, v=value: setattr(rec, "quantize_label", v))
            q_group.addAction(act)
        self.addSeparator()
        self.addAction("Rescan Ports", lambda: self.controller.backend_status(refresh=True))

    def _toggle(self, text: str, value: bool, slot) -> QAction:
        act = self.addAction(text)
        act.setCheckable(True)
        act.setChecked(value)
        act.toggled.connect(slot)
        return act
