"""Application entry point: `main.py [FILE.mid|PROJECT.smartproj] [--screenshot PNG]`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QTimer
from PySide6.QtWidgets import QApplication

from studio.theme import apply_dark_theme

ORGANIZATION = "SMART Studio"
APPLICATION = "SMART Studio"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smart-studio", description="SMART Studio: DAW-style piano sketching")
    parser.add_argument("file", nargs="?", help="a MIDI file or .smartproj project to open")
    parser.add_argument("--screenshot", metavar="PNG", help="save a PNG of the main window once loaded and exit")
    parser.add_argument("--no-audio", action="store_true", help="do not open the audio device")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.screenshot is not None and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a screenshot needs no screen
    logging.basicConfig(level=os.environ.get("SMART_LOGLEVEL", "WARNING"))
    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_dark_theme(app)

    from studio.mainwindow import MainWindow  # after QApplication: widgets need it

    screenshot = args.screenshot is not None
    window = MainWindow(audio=not (args.no_audio or screenshot), interactive=not screenshot)
    window.show()
    ok = True
    if args.file:
        ok = window.open_path(args.file, ask=False)
    if screenshot:
        return _take_screenshot(app, window, Path(args.screenshot), ok)
    # After the event loop starts, so the window is visible behind the question.
    QTimer.singleShot(200, window.offer_recovery)
    # The generation host (local CPU subprocess by default) starts in the background; stopped in shutdown().
    QTimer.singleShot(300, window.generate_panel.connect_host)
    code = app.exec()
    return code


def _take_screenshot(app: QApplication, window, path: Path, opened_ok: bool) -> int:
    # Let layouts settle and the first paint happen before grabbing.
    for _ in range(5):
        app.processEvents()
    if not window.editor.restore_view(window.project_extras.view):  # the final size is known only now
        window.editor.grid.center_on_notes()
    app.processEvents()
    image = window.grab()
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = image.save(str(path), "PNG")
    window.shutdown()
    window.hide()
    if not saved:
        print(f"cannot write screenshot {path}", file=sys.stderr)
        return 1
    return 0 if opened_ok else 1
