"""The studio's services around the policy host, owned by the main window and handed to the panels: the
connection (`connection`: local or remote host, its settings, actions waiting for it), worker threads
(`workers`), downloads for the host (`downloads`: the MAA weights) and the musician's picks with the
taste model fit on them (`taste`). No panel creates or borrows these from another panel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from PySide6.QtCore import QObject

from studio.host.connection import HostConnection
from studio.host.downloads import MaaDownloads
from studio.host.taste import TasteStore


@dataclass
class HostServices:
    connection: HostConnection
    downloads: MaaDownloads
    taste: TasteStore
    settings_note: str | None = None  # why the saved host settings were not all used (said by the Generate panel)

    @classmethod
    def create(cls, settings, project_path: Callable[[], object], parent: QObject) -> "HostServices":
        """The studio's services, configured from `settings`; `project_path()` is the open project's file."""
        connection = HostConnection(parent)
        note = connection.load_settings(settings)
        return cls(connection, MaaDownloads(parent), TasteStore(settings, project_path, parent), note)

    def shutdown(self) -> None:
        """Window closing: the download stops, the local host ends, the last picks land on disk."""
        self.downloads.cancel(wait_ms=5000)
        self.connection.shutdown()
        self.taste.shutdown()
