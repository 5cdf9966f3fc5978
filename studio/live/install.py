"""Puts the live features into the main window: the Sync control on the transport toolbar, the Jam
toolbar, and drag handles on the Generate panel's candidate rows. The window calls `install_live(self)`
once its panels exist and `shutdown()` when it closes."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QMenu

from studio.generate.dragout import CandidateDragHandles
from studio.live.jam import JamControl, JamController
from studio.live.sync import LiveSync
from studio.live.synccontrol import SyncControl


@dataclass
class LiveFeatures:
    sync: LiveSync
    sync_control: SyncControl
    jam: JamController
    jam_bar: JamControl
    candidate_drag: CandidateDragHandles

    def shutdown(self) -> None:
        self.jam.shutdown()  # before the ports it plays on close
        self.sync.shutdown()


def install_live(window) -> LiveFeatures:
    sync = LiveSync(window.transport, window.document, window.settings, window)
    control = SyncControl(sync, window.transport_bar)
    window.transport_bar.addSeparator()
    window.transport_bar.addWidget(control)
    panel = window.generate_panel
    jam = JamController(sync, panel.host, window.document, window.settings, window.midi.recorder, window,
                        generate_options=lambda: panel.options, taste=window.taste_store)
    jam_bar = JamControl(jam, window)
    window.addToolBar(Qt.TopToolBarArea, jam_bar)  # on the edit toolbar's line
    view_menu = window.menu_panels.parentWidget()  # View: beside the other toolbars' toggles
    if isinstance(view_menu, QMenu):
        view_menu.insertAction(window.menu_panels.menuAction(), jam_bar.toggleViewAction())
    drag = CandidateDragHandles(panel.table, panel.model, panel.proxy, window.document)
    sync.message.connect(window.show_message)
    jam.message.connect(window.show_message)
    QTimer.singleShot(0, sync.restore)  # the saved Sync choice, once the window is up
    return LiveFeatures(sync, control, jam, jam_bar, drag)
