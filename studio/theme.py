"""Dark DAW theme: Fusion style, a dark palette and the piano-roll colours."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

BACKGROUND = QColor(0x1E, 0x20, 0x24)
ROW_WHITE = QColor(0x2A, 0x2D, 0x33)
ROW_BLACK = QColor(0x22, 0x24, 0x29)
ROW_C_LINE = QColor(0x40, 0x44, 0x4C)
GRID_SUB = QColor(0x31, 0x34, 0x3A)
GRID_BEAT = QColor(0x3C, 0x40, 0x48)
GRID_BAR = QColor(0x6A, 0x70, 0x7C)
OUT_OF_PIANO = QColor(0, 0, 0, 70)  # shade over pitches a piano does not have
PLAYHEAD = QColor(0xFF, 0xD0, 0x40)
LOOP_ON = QColor(0x3F, 0x9C, 0xFF, 60)
LOOP_OFF = QColor(0x90, 0x90, 0x90, 35)
LOOP_EDGE_ON = QColor(0x3F, 0x9C, 0xFF)
LOOP_EDGE_OFF = QColor(0x80, 0x80, 0x80)
SELECTION_OUTLINE = QColor(0xFF, 0xFF, 0xFF)
RUBBER_BAND = QColor(0x8C, 0xC8, 0xFF, 50)
RUBBER_BAND_EDGE = QColor(0x8C, 0xC8, 0xFF)
TEXT = QColor(0xDD, 0xDF, 0xE4)
TEXT_DIM = QColor(0x90, 0x95, 0xA0)
RULER_BG = QColor(0x26, 0x29, 0x2E)
KEY_WHITE = QColor(0xE8, 0xE8, 0xE8)
KEY_BLACK = QColor(0x1A, 0x1A, 0x1A)
KEY_PRESSED = QColor(0x5A, 0xA9, 0xFF)


def _velocity_colour(v: int) -> QColor:
    # Soft notes cool (blue), loud notes hot (orange-red): the hue walks 210° -> 10°.
    t = max(0, min(127, v)) / 127.0
    hue = int(210 - 200 * t)
    return QColor.fromHsv(hue, 150 + int(70 * t), 150 + int(90 * t))


VELOCITY_COLOURS = [_velocity_colour(v) for v in range(128)]
VELOCITY_COLOURS_SELECTED = [c.lighter(150) for c in VELOCITY_COLOURS]
NOTE_BORDER = [c.darker(170) for c in VELOCITY_COLOURS]

STYLESHEET = """
QToolBar { spacing: 4px; padding: 2px; border: none; }
QToolButton { padding: 3px 6px; border-radius: 3px; }
QToolButton:checked { background: #3f6fa6; color: white; }
QToolButton:hover { background: #3a3e46; }
QStatusBar { color: #c8ccd4; }
QLabel#positionDisplay { font-family: monospace; font-size: 13pt; color: #9fe0a0;
    background: #111316; border: 1px solid #333; padding: 1px 8px; border-radius: 3px; }
"""


def apply_dark_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    pal = QPalette()
    pal.setColor(QPalette.Window, QColor(0x2B, 0x2E, 0x34))
    pal.setColor(QPalette.WindowText, TEXT)
    pal.setColor(QPalette.Base, QColor(0x1C, 0x1E, 0x22))
    pal.setColor(QPalette.AlternateBase, QColor(0x26, 0x29, 0x2E))
    pal.setColor(QPalette.ToolTipBase, QColor(0x33, 0x36, 0x3C))
    pal.setColor(QPalette.ToolTipText, TEXT)
    pal.setColor(QPalette.Text, TEXT)
    pal.setColor(QPalette.Button, QColor(0x33, 0x36, 0x3C))
    pal.setColor(QPalette.ButtonText, TEXT)
    pal.setColor(QPalette.BrightText, QColor(0xFF, 0x50, 0x50))
    pal.setColor(QPalette.Highlight, QColor(0x3F, 0x6F, 0xA6))
    pal.setColor(QPalette.HighlightedText, QColor(0xFF, 0xFF, 0xFF))
    pal.setColor(QPalette.Link, QColor(0x6A, 0xB0, 0xFF))
    for role in (QPalette.WindowText, QPalette.Text, QPalette.ButtonText):
        pal.setColor(QPalette.Disabled, role, QColor(0x70, 0x74, 0x7C))
    app.setPalette(pal)
    app.setStyleSheet(STYLESHEET)


# Panel text styles: a warning the musician should read, a state that is fine, a side note.
STYLE_WARN = "color: #ffb060;"
STYLE_OK = "color: #9fe0a0;"
STYLE_DIM = "color: #9095a0;"
